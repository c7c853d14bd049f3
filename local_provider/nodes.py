"""Several simulated nodes on one machine, each its own keys_manager with its own memory
budget, and replicas placed on them by the cache-aware scheduler.

Why: placement (``placement``) must be exercised for real — real
caches that fill, zygotes that are warm on one node and not another, a node
that fails — without a cluster.  ``QUART_NODES`` turns it on in the local
provider:

  QUART_NODES=3                        node-0..node-2, each QUART_NODE_MEMORY
  QUART_NODES=a:1GiB,b:2GiB:2          name:memory_threshold[:capacity]

Each node's labels are ``kubernetes.io/hostname=<name>`` and ``node=<name>``,
so faas-cli ``constraints:`` such as ``kubernetes.io/hostname=a`` pin a
function.  ``fail(node)`` simulates a node failure: its agent, zygotes and
replicas are killed and it takes no more replicas; the provider then
replaces the lost replicas on the nodes that are left.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.manifest import read_manifest
from keys_manager.client import AgentError, AgentLauncher, ForkedHandle
from keys_manager.threshold import node_memory_bytes, parse_threshold
from placement import Node, PlacementConfig, StageRequest, place

log = logging.getLogger("local_provider.nodes")


@dataclass
class SimNode:
    name: str
    memory: str
    capacity: float
    launcher: AgentLauncher
    up: bool = True


def parse_nodes(spec: str, default_memory: str) -> list[tuple[str, str, float]]:
    spec = spec.strip()
    if spec.isdigit():
        return [(f"node-{i}", default_memory, 1.0) for i in range(int(spec))]
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        bits = part.split(":")
        if not bits[0] or len(bits) > 3:
            raise ValueError(f"QUART_NODES entry {part!r}: use name[:memory[:capacity]]")
        mem = bits[1] if len(bits) > 1 and bits[1] else default_memory
        parse_threshold(mem, node_memory_bytes())  # validates
        out.append((bits[0], mem, float(bits[2]) if len(bits) > 2 else 1.0))
    if len({n for n, _, _ in out}) != len(out):
        raise ValueError("QUART_NODES: node names must be unique")
    return out


class MultiNodeLauncher:
    def __init__(self, state_dir: Path, spec: str, default_memory: str = "0.2",
                 placement: PlacementConfig | None = None) -> None:
        self.nodes: dict[str, SimNode] = {}
        for name, mem, cap in parse_nodes(spec, default_memory):
            d = Path(state_dir).absolute() / "nodes" / name
            env = {**os.environ, "QUART_STATE_DIR": str(d), "QUART_KEYS_SOCKET": str(d / "km.sock"),
                   "QUART_KEYS_DIR": str(d / "keys"), "QUART_MEMORY_THRESHOLD": mem,
                   "QUART_KEYS_METRICS_PORT": "0"}
            env.pop("QUART_SHM_DIR", None)  # each node its own /dev/shm directory
            self.nodes[name] = SimNode(name, mem, cap, AgentLauncher(d, env))
        self.cfg = placement or PlacementConfig()
        self.where: dict[int, str] = {}  # replica pid -> node
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ cluster view

    def _view(self, function: str, stage_key: str | None) -> list[Node]:
        out = []
        for sn in self.nodes.values():
            cached: dict[str, str] = {}
            stage_bytes: dict[str, int] = {}
            replicas: dict[str, int] = {}
            mem = parse_threshold(sn.memory, node_memory_bytes())
            used = 0
            if sn.up:
                try:
                    st = sn.launcher.status()
                except AgentError:
                    st = None  # not started yet: an empty node
                if st is not None:
                    mem = st["cache"]["threshold_bytes"]
                    used = st["cache"]["bytes"]["T1"]
                    entries = st["cache"]["entries"]
                    if stage_key in entries:
                        e = entries[stage_key]
                        cached[function] = "T1" if e["T1"] else "T2" if e["T2"] else "T3"
                        if e["T1"]:
                            stage_bytes[function] = e["bytes"]
                    if any(z["function"] == function and z["alive"] for z in st["zygotes"]):
                        cached[function] = "T0"
                    for r in st["replicas"]:
                        if r["alive"]:
                            replicas[r["function"]] = replicas.get(r["function"], 0) + 1
            out.append(Node(sn.name, mem, used, sn.capacity, cached, stage_bytes, replicas,
                            {"kubernetes.io/hostname": sn.name, "node": sn.name}, sn.up))
        return out

    # ------------------------------------------------------------------ ReplicaLauncher

    def launch(self, spec: Any) -> ForkedHandle:
        node, reason = self._pick(spec)
        return self._placed(spec, self.nodes[node].launcher.launch(spec), node, reason)

    def take_pooled(self, spec: Any,
                    meanwhile: Callable[[], None] | None = None) -> ForkedHandle | None:
        """A pooled worker on the node placement picks, or None (``AgentLauncher``'s)."""
        try:
            node, reason = self._pick(spec)
        except RuntimeError:
            return None  # ``launch`` says why
        h = self.nodes[node].launcher.take_pooled(spec, meanwhile)
        return self._placed(spec, h, node, reason) if h is not None else None

    def _pick(self, spec: Any) -> tuple[str, str]:
        key, nbytes = _stage_of(spec)
        constraints = tuple(getattr(spec, "constraints", ()) or ())
        with self.lock:
            view = self._view(spec.function, key)
            [p] = place(view, [StageRequest(spec.function, add=1, bytes=nbytes,
                                            constraints=constraints)], self.cfg)
        if p.node is None:
            raise RuntimeError(f"no node for {spec.function}: {p.reason}")
        return p.node, p.reason

    def _placed(self, spec: Any, h: ForkedHandle, node: str, reason: str) -> ForkedHandle:
        h.info["node"] = node
        h.info["placement"] = reason
        with self.lock:
            self.where[h.pid] = node
        log.info("%s-%d on %s: %s", spec.function, spec.index, node, reason)
        return h

    def victims(self, function: str, handles: list[Any], k: int) -> list[Any]:
        """Which running replicas to stop: the placement policy's removal choice."""
        with self.lock:
            view = self._view(function, None)
        out, left = [], list(handles)
        for p in place(view, [StageRequest(function, remove=k)], self.cfg):
            h = next((h for h in left if self.where.get(h.pid) == p.node), None)
            if h is not None:
                left.remove(h)
                out.append(h)
        return out + left[:k - len(out)]

    def fail(self, node: str) -> dict[str, Any]:
        """Simulate a node failure: kill its agent, zygotes and replicas; take no more."""
        sn = self.nodes[node]
        sn.up = False
        # first, so that the launcher's supervisor does not restart the agent killed below
        proc, sn.launcher._proc = sn.launcher._proc, None
        killed = []
        try:
            st = sn.launcher.status()
            pids = [p["pid"] for p in st["zygotes"] + st["replicas"]] + [st["pid"]]
        except AgentError:
            pids = []
        with self.lock:
            pids += [pid for pid, n in self.where.items() if n == node]
        for pid in dict.fromkeys(pids):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        if proc is not None:  # our child: reap it
            proc.wait(timeout=10)
        log.warning("node %s failed (simulated): killed %d process(es)", node, len(killed))
        return {"node": node, "killed": killed}

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": n.name, "up": n.up, "memory_threshold_bytes": n.memory_bytes,
                 "t1_bytes": n.used_bytes, "capacity": n.capacity, "replicas": dict(n.replicas),
                 "labels": dict(n.labels)} for n in self._view("", None)]

    def close(self) -> None:
        for sn in self.nodes.values():
            if sn.up:
                sn.launcher.close()
            else:  # a failed node: clean its shared memory as a restart would
                try:
                    sn.launcher.ensure_agent()
                    sn.launcher.close()
                except AgentError:
                    pass


def _stage_of(spec: Any) -> tuple[str | None, int]:
    md = spec.env.get("QUART_MODEL_DIR")
    if not md:
        return None, 0
    try:
        origin = (Path(spec.workdir) / md).resolve()
        m = read_manifest(origin)
        idx = int(spec.env.get("QUART_STAGE") or 0)
        model = spec.env.get("QUART_MODEL") or m["model"]
        return f"{model}--stage-{idx}", int(m["stages"][idx]["file_bytes"])
    except (OSError, ValueError, KeyError, IndexError):
        return None, 0

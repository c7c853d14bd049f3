"""The keys_manager process: the agent's API on a Unix socket, metrics over HTTP.

API (``QUART_KEYS_SOCKET``, mode 0600: only the service user may connect,
which is the access control; one JSON object per line in, one per line out,
every answer has ``ok`` and, when false, ``error`` and ``kind``):

  {"op": "ping"}                                       -> {"ok", "pid", "orphaned"}
  {"op": "adopt", "owner": PID}                        -> {"ok"}: PID (a provider) owns us now
  {"op": "ensure", "model_dir": D, "stage": N, "model"?: M}
                                                       -> {"ok", "tier", "path", "bytes", "ms"}
  {"op": "spawn", "replica": {function, index, handler_dir, template_dir, workdir, env,
                              log_path, max_inflight}, "mode"?: "fork"|"process",
   "weights"?: "T1"|"T2"|"T3", "pooled_only"?: bool}  -> {"ok", "replica": {pid, url, tier,
                                                           spawn_ms, zygote_pid, ...}}
                                                          (pooled_only: an idle pooled worker
                                                          handed over, or "replica": null at
                                                          once; never a fork or a cold start)
  {"op": "kill", "pid": P, "grace_s"?: S}              -> {"ok", "killed"}
  {"op": "pool", "function": F, "size": N}             -> {"ok"}: keep N idle workers of F
                                                           pre-forked (keys_manager/pool.py)
  {"op": "status"}                                     -> {"ok", "status": {...}}
  {"op": "scrub"}                                      -> {"ok", "rebuilt": [stage, ...]}
  {"op": "evict", "stage": "MODEL--stage-N", "disk"?: bool}  -> {"ok", "evicted"}
  {"op": "shutdown", "replicas"?: bool}                -> {"ok"}, then the process exits
                                                          (replicas too: ``quart-faas down``)

An owned agent (``QUART_KEYS_OWNER_PID``, keys_manager/owner.py) whose provider died and that
nobody adopts within ``QUART_KEYS_ORPHAN_GRACE_S`` stops its replicas and zygotes and exits.

Why a Unix socket rather than loopback HTTP: ``spawn`` starts code named in
the request, so who may call it must be decided by file permissions, not by
whoever can reach a port.  ``/metrics`` and ``/healthz`` carry no such power
and are plain HTTP for Prometheus (``QUART_KEYS_METRICS_PORT``).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keys_manager import openapi
from keys_manager.agent import KeysManager
from keys_manager.cache import CacheFull, StageKey
from keys_manager.config import AgentConfig
from keys_manager.launch import SpawnError
from keys_manager.metrics import AgentMetrics
from keys_manager.owner import Owner
from keys_manager.request import ReplicaRequest
from keys_manager.segment import SegmentCorrupt

log = logging.getLogger("keys_manager")
MAX_LINE = 1 << 20


# size: one flat dispatch over the API's ops, read as the table in the module docstring
def handle(agent: KeysManager, req: Any, stop: threading.Event,
           owner: Owner | None = None) -> dict[str, Any]:
    """One API request -> its answer; never raises."""
    try:
        if not isinstance(req, dict):
            raise ValueError("request must be a JSON object")
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(),
                    "orphaned": owner.orphaned() if owner is not None else False}
        if op == "adopt":
            pid = req.get("owner")
            if isinstance(pid, bool) or not isinstance(pid, int) or owner is None:
                raise ValueError("owner must be a pid (and this agent must be owned)")
            owner.adopt(pid)
            return {"ok": True}
        if op == "ensure":
            t0 = time.perf_counter()
            stage = req.get("stage")
            if isinstance(stage, bool) or not isinstance(stage, int):
                raise ValueError("stage must be an integer")
            model = req.get("model")
            e = agent.ensure(Path(str(req.get("model_dir", ""))), stage,
                             str(model) if model else None)
            return {"ok": True, "tier": e.tier, "path": str(e.path), "bytes": e.bytes,
                    "stage": str(e.key), "ms": round((time.perf_counter() - t0) * 1e3, 3)}
        if op == "spawn":
            rep = agent.spawn(ReplicaRequest.from_json(req.get("replica")),
                              str(req.get("mode", "fork")), str(req.get("weights", "T1")),
                              pooled_only=req.get("pooled_only") is True, defer_save=True)
            return {"ok": True, "replica": rep}
        if op == "kill":
            pid, grace = req.get("pid"), req.get("grace_s", 5.0)
            if isinstance(pid, bool) or not isinstance(pid, int):
                raise ValueError("pid must be an integer")
            if isinstance(grace, bool) or not isinstance(grace, (int, float)) or \
                    not 0 <= grace <= 300:
                raise ValueError("grace_s must be a number in [0, 300]")
            return {"ok": True, "killed": agent.kill(pid, float(grace))}
        if op == "pool":
            agent.set_pool(str(req.get("function", "")), req.get("size"))
            return {"ok": True}
        if op == "status":
            return {"ok": True, "status": agent.status()}
        if op == "scrub":
            return {"ok": True, "rebuilt": agent.scrub()}
        if op == "evict":
            return {"ok": True, "evicted": agent.evict(StageKey.parse(str(req.get("stage"))),
                                                       bool(req.get("disk", False)))}
        if op == "shutdown":
            agent.stop_replicas_at_shutdown = req.get("replicas") is True
            stop.set()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}: ping, adopt, ensure, spawn, kill, pool, status, "
                         f"scrub, evict or shutdown")
    except CacheFull as e:
        return {"ok": False, "kind": "cache_full", "error": str(e)}
    except SegmentCorrupt as e:
        return {"ok": False, "kind": "corrupt", "error": str(e)}
    except SpawnError as e:
        return {"ok": False, "kind": "spawn_failed", "error": str(e)}
    except (ValueError, TypeError, FileNotFoundError) as e:
        return {"ok": False, "kind": "bad_request", "error": str(e)}
    except Exception as e:
        log.exception("request %r failed", req.get("op") if isinstance(req, dict) else req)
        return {"ok": False, "kind": "internal", "error": f"{type(e).__name__}: {e}"}


class _Api(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    agent: KeysManager
    stop: threading.Event
    owner: Owner


class _ApiHandler(socketserver.StreamRequestHandler):
    server: _Api

    def handle(self) -> None:
        self.connection.settimeout(30)
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            return
        if len(line) > MAX_LINE:
            ans = {"ok": False, "kind": "bad_request", "error": f"request over {MAX_LINE} bytes"}
        else:
            try:
                req = json.loads(line.decode() or "null")
                ans = handle(self.server.agent, req, self.server.stop, self.server.owner)
            except (ValueError, UnicodeDecodeError) as e:
                ans = {"ok": False, "kind": "bad_request", "error": f"invalid JSON: {e}"}
        try:
            self.wfile.write(json.dumps(ans).encode() + b"\n")
        except OSError:
            pass
        self.server.agent.flush()  # a spawn's state.json, after its answer (agent.spawn)


def _metrics_server(cfg: AgentConfig, metrics: AgentMetrics) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def _route(self) -> tuple[bytes, str, int]:
            path = urlsplit(self.path).path  # a query string does not change the resource
            if path == "/metrics":
                return generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            if path == "/healthz":
                return b"OK\n", "text/plain", 200
            if path == "/openapi.json":
                return json.dumps(openapi.document()).encode(), "application/json", 200
            return b'{"error": "not found: /metrics, /healthz or /openapi.json"}', \
                "application/json", 404

        def _send(self, body: bytes, ctype: str, code: int, head: bool = False,
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(*self._route())

        def do_HEAD(self) -> None:
            self._send(*self._route(), head=True)

        def _refuse(self) -> None:
            self._send(b'{"error": "method not allowed: GET or HEAD"}', "application/json", 405,
                       head=self.command == "HEAD", extra={"Allow": "GET, HEAD"})

        def __getattr__(self, name: str) -> Any:
            # any other method (POST, TRACE, ...) is refused with 405, not http.server's 501
            if name.startswith("do_"):
                return self._refuse
            raise AttributeError(name)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer((cfg.metrics_bind, cfg.metrics_port), H)
    srv.daemon_threads = True
    return srv


def _bind_api(path: Path) -> _Api:
    if len(str(path)) > 107:
        raise SystemExit(f"QUART_KEYS_SOCKET {path} is longer than 107 bytes (Unix limit)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        srv = _Api(str(path), _ApiHandler)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return srv


def run(cfg: AgentConfig, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT, ``shutdown`` or ``stop``; then stop zygotes, free T1."""
    stop = stop or threading.Event()
    owner = Owner.from_env()
    metrics = AgentMetrics()
    agent = KeysManager(cfg, on_spawn=metrics.observe_spawn)
    metrics.attach(agent)
    api = _bind_api(cfg.socket)
    api.agent, api.stop, api.owner = agent, stop, owner
    msrv = _metrics_server(cfg, metrics)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True) for s in (api, msrv)]
    for t in threads:
        t.start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    info = {"pid": os.getpid(), "socket": str(cfg.socket),
            "metrics": f"http://{cfg.metrics_bind}:{msrv.server_address[1]}",
            "shm_dir": str(cfg.shm_dir), "threshold_bytes": cfg.memory_threshold_bytes}
    (cfg.keys_dir / "agent.json").write_text(json.dumps(info))
    log.info("keys_manager ready: %s", json.dumps(info))
    print(f"keys_manager pid {os.getpid()} ready on {cfg.socket}, metrics {info['metrics']}",
          flush=True)
    last_scrub = time.monotonic()
    try:
        while not stop.wait(cfg.reap_period_s):
            agent.reap()
            if owner.expired():
                log.error("owner pid %s is gone and no provider adopted us in %gs: stopping "
                          "replicas and zygotes", owner.pid, owner.grace_s)
                agent.stop_replicas_at_shutdown = True
                break
            if cfg.scrub_period_s and time.monotonic() - last_scrub >= cfg.scrub_period_s:
                last_scrub = time.monotonic()
                agent.scrub()
    finally:
        api.shutdown()
        msrv.shutdown()
        api.server_close()
        msrv.server_close()
        cfg.socket.unlink(missing_ok=True)
        agent.shutdown()
        (cfg.keys_dir / "agent.json").unlink(missing_ok=True)
        log.info("keys_manager stopped; %s released", cfg.shm_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = AgentConfig.from_env()
    except ValueError as e:
        print(f"keys_manager: {e}", file=sys.stderr)
        return 2
    return run(cfg)

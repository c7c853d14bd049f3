"""A pod's network: a network namespace joined to this machine by a veth pair on a /30.

Slots (a /30 of 10.233.0.0/16 and a netns name) are claimed with a flock under
/run/quart-pods, so runners in several processes never share one, and a slot left by a
crashed runner is cleaned up by the next that takes it. The host end is .1, the pod .2,
and the pod's default route goes through the host end.

``LoopbackRelay``: what a pod on a node reaches as a cluster Service. A pipeline stage
calls the next one through the gateway (QUART_GATEWAY_URL); the local provider's gateway
listens on 127.0.0.1 by default, which inside a pod is the pod's own loopback. The relay
listens on the pod slot's host-side address and forwards each connection to the same
port on this machine's loopback, so the pod reaches the gateway without it listening on
any other interface.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("local_provider.podnet")
LOCK_DIR = Path("/run/quart-pods")
NETNS_DIR = Path("/run/netns")
MAX_SLOTS = 16384  # /30s in 10.233.0.0/16


class PodError(RuntimeError):
    pass


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        raise PodError(f"{' '.join(argv)}: {r.stderr.strip() or r.returncode}")


@dataclass
class PodNet:
    """One claimed slot: its netns, its veth pair and its /30."""

    slot: int
    lock_fd: int

    @property
    def netns(self) -> str:
        return f"quart-pod-{self.slot}"

    @property
    def host_if(self) -> str:
        return f"qp{self.slot}h"

    def addr(self, end: int) -> str:
        n = 4 * self.slot + end
        return f"10.233.{n >> 8}.{n & 255}"

    @property
    def host_ip(self) -> str:
        return self.addr(1)

    @property
    def ip(self) -> str:
        return self.addr(2)

    @classmethod
    def claim(cls) -> PodNet:
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        for slot in range(MAX_SLOTS):
            fd = os.open(LOCK_DIR / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            net = cls(slot, fd)
            net.teardown(release=False)  # what a crashed owner left behind
            return net
        raise PodError(f"all {MAX_SLOTS} pod network slots are taken")

    def setup(self) -> None:
        pod_if, ns = f"qp{self.slot}p", self.netns
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", pod_if,
             "netns", ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.ip}/30", "dev", pod_if)
        _run("ip", "-n", ns, "link", "set", pod_if, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", self.host_ip)

    def teardown(self, release: bool = True) -> None:
        """Deleting the netns deletes the veth pair with it (once its last process left)."""
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.host_if], capture_output=True, check=False)
        if release and self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1



class LoopbackRelay:
    """Forwards ``host_ip:port`` to ``127.0.0.1:port``, one thread pair per connection."""

    def __init__(self, host_ip: str, port: int) -> None:
        self.port = port
        self._srv = socket.create_server((host_ip, port), backlog=128)
        self._closed = False
        threading.Thread(target=self._accept, name=f"relay-{host_ip}:{port}",
                         daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                up.settimeout(None)
            except OSError as e:
                log.warning("relay to 127.0.0.1:%d: %s", self.port, e)
                conn.close()
                continue
            pair = _Pair()
            for src, dst in ((conn, up), (up, conn)):
                threading.Thread(target=_pump, args=(src, dst, pair), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        try:
            self._srv.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._srv.close()


class _Pair:
    """Two sockets relayed both ways; the second direction to end closes both."""

    def __init__(self) -> None:
        self.lock, self.ended = threading.Lock(), 0

    def end(self) -> bool:
        with self.lock:
            self.ended += 1
            return self.ended == 2


def _pump(src: socket.socket, dst: socket.socket, pair: _Pair) -> None:
    """Copy until EOF and pass the half-close on."""
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):  # a reset: end the other direction too
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    if pair.end():
        src.close()
        dst.close()

"""Byte relays between TCP and Unix sockets, to run a program in its own network namespace.

The upstream OpenFaaS gateway listens on fixed ports (8080 API, 8082 metrics;
gateway/main.go has no setting for them).  Tests run it in a private network
namespace (``unshare -rn``), so it never collides with anything on this
machine, and reach it through Unix sockets, whose file paths are visible
from every network namespace:

    outside: tcp 127.0.0.1:FREE  -> unix gw.sock      (tests, faas-cli)
    inside:  unix gw.sock        -> tcp 127.0.0.1:8080 (the gateway)
    inside:  tcp 127.0.0.1:8081  -> unix prov.sock    (gateway -> our provider)
    outside: unix prov.sock      -> tcp 127.0.0.1:PROVIDER

``python -m tests.netns_relay [--lo-up] --forward LISTEN=TARGET ... [-- CMD ...]``
where an address is ``tcp:HOST:PORT`` or ``unix:PATH``.  With a command, the
relay runs it as a child and exits with it (and stops it on SIGTERM).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """``ip link set lo up`` without iproute2 (a new network namespace starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def parse(addr: str) -> tuple[str, str, int]:
    kind, _, rest = addr.partition(":")
    if kind == "unix" and rest:
        return kind, rest, 0
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{addr!r}: use tcp:HOST:PORT or unix:PATH")
    return kind, host, int(port)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: HTTP clients may still read the answer
    except (ConnectionError, OSError):
        writer.close()


async def _open(target: tuple[str, str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, host, port = target
    if kind == "unix":
        return await asyncio.open_unix_connection(host)
    return await asyncio.open_connection(host, port)


def _handler(target: tuple[str, str, int]):  # type: ignore[no-untyped-def]
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await _open(target)
        except OSError:
            cw.close()  # the other side is not there (yet): refuse like a closed port
            return
        await asyncio.gather(_pump(cr, uw), _pump(ur, cw))
        for w in (uw, cw):
            w.close()
    return handle


async def serve(forwards: list[tuple[tuple[str, str, int], tuple[str, str, int]]],
                cmd: list[str]) -> int:
    servers = []
    for listen, target in forwards:
        kind, host, port = listen
        if kind == "unix":
            Path(host).unlink(missing_ok=True)
            servers.append(await asyncio.start_unix_server(_handler(target), host))
        else:
            servers.append(await asyncio.start_server(_handler(target), host, port))
    print("relay ready", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    child = subprocess.Popen(cmd) if cmd else None
    while not stop.is_set() and (child is None or child.poll() is None):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    code = 0
    if child is not None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        code = child.wait()
    for s in servers:
        s.close()
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd = args[args.index("--") + 1:] if "--" in args else []
    own = args[:args.index("--")] if "--" in args else args
    p = argparse.ArgumentParser(prog="python -m tests.netns_relay", description=__doc__)
    p.add_argument("--lo-up", action="store_true", help="bring the loopback interface up first")
    p.add_argument("--forward", action="append", default=[], metavar="LISTEN=TARGET")
    a = p.parse_args(own)
    forwards = []
    for f in a.forward:
        listen, sep, target = f.partition("=")
        if not sep:
            p.error(f"--forward {f!r}: LISTEN=TARGET")
        forwards.append((parse(listen), parse(target)))
    if a.lo_up:
        loopback_up()
    return asyncio.run(serve(forwards, cmd))


if __name__ == "__main__":
    raise SystemExit(main())

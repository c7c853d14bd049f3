"""Entry point of every quart-python replica (the of-watchdog upstream in http mode).

Small on purpose, and answering like the upstream python3-http template (lean_http.answer).
Heavy modules (torch) are imported once, *before* the handler, so that a later zygote can
fork ready-to-serve children from this process.

Environment (all optional):
  QUART_HANDLER_DIR   handler package directory (default: ./function beside this file)
  QUART_LISTEN_FD     an already-listening socket inherited from the provider
  QUART_LISTEN_HOST / QUART_LISTEN_PORT   otherwise bind here (default 127.0.0.1:5000)
  QUART_PRELOAD       comma-separated modules to import first (default "torch")
  max_inflight        handler calls served at once (default 8); /_/health is always answered
  QUART_HTTP_SERVER   lean (default: lean_http.py, keep-alive, no WSGI) or waitress (the Flask
                      app); pod mode's workers serve lean_http, one connection at a time
  QUART_MAX_CONNECTIONS  connections the lean server holds at once (256); more wait
  QUART_ZYGOTE_SOCKET become a zygote serving forks there, if keys_manager is importable
  QUART_POD_WORKERS   pod mode: fork that many workers on one socket (quart_pod/ beside this)
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from pathlib import Path

for _mod in filter(None, os.environ.get("QUART_PRELOAD", "torch").split(",")):
    importlib.import_module(_mod.strip())

from flask import Flask, Response, request
from waitress import serve
from werkzeug.datastructures import Headers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # as `python index.py` has it
import lean_http  # noqa: E402 - ships beside this file: the replica's HTTP server

# keep activations (MBs) in memory: waitress spills bodies over 512 KiB to temp files
BUFFERS = {"inbuf_overflow": 64 << 20, "outbuf_overflow": 64 << 20}


def load_handler(handler_dir: Path):
    """Import the handler folder as the package ``function`` (the name faas-cli gives it)."""
    spec = importlib.util.spec_from_file_location("function", handler_dir / "__init__.py",
                                                  submodule_search_locations=[str(handler_dir)])
    if spec is None or spec.loader is None:
        raise SystemExit(f"no handler package in {handler_dir}")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["function"] = pkg
    spec.loader.exec_module(pkg)
    return importlib.import_module("function.handler")


handler = load_handler(Path(os.getenv("QUART_HANDLER_DIR", Path(__file__).parent / "function")))
app = Flask(__name__)  # QUART_HTTP_SERVER=waitress serves it


def reserved(path: str) -> tuple[int, Headers, bytes]:  # of-watchdog keeps /_/ too
    with app.app_context():  # a dict from openapi() is jsonify'd
        r = app.make_response(getattr(handler, "openapi", lambda: ("", 404))()
                              if path != "/_/health" else "OK")
    return r.status_code, r.headers, r.get_data()


@app.route("/", defaults={"path": ""}, methods=list(lean_http.METHODS))
@app.route("/<path:path>", methods=list(lean_http.METHODS))
def call_flask(path: str):
    if request.path in lean_http.RESERVED:
        if request.method not in ("GET", "HEAD"):
            return Response("", 405, {"Allow": "GET, HEAD"})
        status, headers, body = reserved(request.path)
    else:
        event = lean_http.Event(request.get_data(), request.headers, request.method,
                                request.args, request.path)
        status, headers, body = lean_http.answer(handler.handle(event, lean_http.Context()),
                                                 app.json.dumps)
    return Response(body, status=status, headers=headers)


def serve_fd(fd: int) -> None:  # on an inherited, already-listening socket
    inflight = int(os.environ.get("max_inflight", "8") or 8)  # noqa: SIM112 (of-watchdog)
    if os.environ.get("QUART_HTTP_SERVER", "lean").strip().lower() == "waitress":
        return serve(app, sockets=[socket.socket(fileno=fd)], threads=1 + inflight, ident=None,
                     _quiet=True, **BUFFERS)
    lean_http.serve(socket.socket(fileno=fd), router(inflight))


def router(inflight: int) -> lean_http.Router:
    return lean_http.Router(handler.handle, reserved, inflight, app.json.dumps)


def listen_fd() -> int:  # the provider's, else bound here (e.g. on a stock OpenFaaS node)
    addr = (os.environ.get("QUART_LISTEN_HOST", "127.0.0.1"),
            int(os.environ.get("QUART_LISTEN_PORT", "5000")))
    fd = os.environ.get("QUART_LISTEN_FD")
    return int(fd) if fd else socket.create_server(addr, backlog=1024).detach()


def main() -> None:
    zygote = importlib.util.find_spec("keys_manager") and os.environ.get("QUART_ZYGOTE_SOCKET")
    if not zygote and not os.environ.get("QUART_POD_WORKERS", "").strip():
        return serve_fd(listen_fd())
    app.test_client().get("/_/health")  # a parent to fork from: build Flask's lazy state once,
    reserved("/_/health")  # and the lean server's path to it
    getattr(handler, "warmup", lambda: None)()  # and the handler's (e.g. torch kernels)
    if zygote:
        from keys_manager.zygote import serve_zygote  # keys_manager forks replicas from here
        serve_zygote(zygote, serve_fd)
    else:
        import quart_pod  # ships beside this file: the zygote of this pod's workers
        quart_pod.run(router(int(os.environ.get("max_inflight", "8") or 8)),  # noqa: SIM112
                      socket.socket(fileno=listen_fd()))


if __name__ == "__main__":
    main()

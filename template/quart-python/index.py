"""Entry point of every quart-python replica (the of-watchdog upstream in http mode).

Small on purpose, and answering like the upstream python3-http template (format_response).
Heavy modules (torch) are imported once, *before* the handler, so that a later zygote can
fork ready-to-serve children from this process.

Environment (all optional):
  QUART_HANDLER_DIR   handler package directory (default: ./function beside this file)
  QUART_LISTEN_FD     an already-listening socket inherited from the provider
  QUART_LISTEN_HOST / QUART_LISTEN_PORT   otherwise bind here (default 127.0.0.1:5000)
  QUART_PRELOAD       comma-separated modules to import first (default "torch")
  max_inflight        calls served at once (default 8), plus a thread for /_/health when busy
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


class Event:
    def __init__(self) -> None:
        self.body, self.headers, self.method = request.get_data(), request.headers, request.method
        self.query, self.path = request.args, request.path


class Context:
    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")


def format_response(res) -> Response:
    """As upstream python3-http: a dict with statusCode (or only body/headers) is a response,
    its dict or list body sent as JSON; any other dict or list is the JSON answer itself."""
    if not isinstance(res, dict) or "statusCode" not in res and not (
            "body" in res and res.keys() <= {"body", "headers"}):
        res = {"body": res}  # None is an empty 200; str and bytes go out as they are
    body, headers = res.get("body"), Headers(res.get("headers") or {})
    if isinstance(body, (dict, list)):
        body = app.json.dumps(body) + "\n"  # what jsonify sends
        headers.setdefault("Content-Type", "application/json")
    elif body is None or not isinstance(body, (str, bytes)) and not hasattr(body, "__next__"):
        body = "" if body is None else str(body)  # a generator streams; a number is its str
    return Response(body, status=int(res.get("statusCode", 200)), headers=headers)


handler = load_handler(Path(os.getenv("QUART_HANDLER_DIR", Path(__file__).parent / "function")))
app = Flask(__name__)


@app.route("/_/<any(health, 'openapi.json'):w>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def reserved(w: str):  # the template's, never the handler's (of-watchdog keeps /_/ too)
    if request.method not in ("GET", "HEAD"):
        return Response("", 405, {"Allow": "GET, HEAD"})
    return getattr(handler, "openapi", lambda: ("", 404))() if w != "health" else "OK"


@app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def call_handler(path: str):
    return format_response(handler.handle(Event(), Context()))


def serve_fd(fd: int) -> None:  # on an inherited, already-listening socket
    threads = 1 + int(os.environ.get("max_inflight", "8") or 8)  # noqa: SIM112 (of-watchdog)
    serve(app, sockets=[socket.socket(fileno=fd)], threads=threads, ident=None, _quiet=True,
          **BUFFERS)


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
    getattr(handler, "warmup", lambda: None)()  # and the handler's (e.g. torch kernels)
    if zygote:
        from keys_manager.zygote import serve_zygote  # keys_manager forks replicas from here
        serve_zygote(zygote, serve_fd)
    else:
        import quart_pod  # ships beside this file: the zygote of this pod's workers
        quart_pod.run(app, socket.socket(fileno=listen_fd()), BUFFERS)


if __name__ == "__main__":
    main()

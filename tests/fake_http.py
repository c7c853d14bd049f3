"""Small HTTP stand-ins for parts that cannot run here (faas-netes, the Kubernetes API), each
a werkzeug app on a free loopback port in a thread that records every request it gets."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: object, **kw: object) -> None:  # the recorder keeps them
        pass


class Recorder:
    """``handler(request) -> Response``; ``requests`` lists what came in, in order."""

    def __init__(self, handler: Callable[[Request], Response], ssl_context: Any = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = make_server(host, port, self._app, threaded=True,
                                   request_handler=_Quiet, ssl_context=ssl_context)
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://{host}:{self._server.server_port}"
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _app(self, environ: dict, start_response: Callable) -> Any:
        request = Request(environ)
        seen = Seen(request.method, request.path, dict(request.args),
                    dict(request.headers), request.get_data())
        with self._lock:
            self.requests.append(seen)
        return self.handler(request)(environ, start_response)

    def calls(self, method: str, path_prefix: str = "") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests
                    if r.method == method and r.path.startswith(path_prefix)]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")

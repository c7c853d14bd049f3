"""Decoder stages in-process behind a small real HTTP gateway (waitress on a free port).

``/function/<name>`` dispatches to the stage servers registered under that
name, round-robin when there are several (as a gateway balancing replicas with
no affinity would), so the KV-miss fallback is exercised on real HTTP.
"""
from __future__ import annotations

import itertools
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from waitress.server import create_server

from functions.stage.config import StageConfig
from functions.stage.decoder_server import DecoderLimits, DecoderServer


@dataclass
class Event:
    body: bytes
    headers: Any
    method: str = "POST"


def stage(model_dir: Path, k: int, n: int, gateway: str, prefix: str = "opt-stage",
          **env: str) -> DecoderServer:
    base = {"QUART_MODEL_DIR": str(model_dir), "QUART_STAGE": str(k),
            "QUART_NEXT_FUNCTION": "" if k == n - 1 else f"{prefix}-{k + 1}",
            "QUART_GATEWAY_URL": gateway, "QUART_MAX_INPUT_CHARS": "200",
            "QUART_MAX_BODY_BYTES": "2000000"}
    limits = DecoderLimits(int(env.pop("max_new_tokens", 100)), 8, 64 << 20, 60.0)
    return DecoderServer(StageConfig.from_env({**base, **env}), limits)


class Gateway:
    def __init__(self) -> None:
        self.replicas: dict[str, list[DecoderServer]] = {}
        self._rr: dict[str, itertools.cycle] = {}
        app = Flask("test-gateway")

        @app.route("/function/<name>", methods=["GET", "POST", "PUT", "DELETE"])
        def fn(name: str) -> Response:
            if name not in self.replicas:
                return Response('{"error": "no such function"}', 404)
            srv = next(self._rr[name])
            res = srv.handle(Event(request.get_data(), request.headers, request.method))
            return Response(res["body"], status=res["statusCode"], headers=res["headers"])

        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = create_server(app, sockets=[sock], threads=16)
        threading.Thread(target=self.server.run, daemon=True).start()

    def add(self, name: str, *servers: DecoderServer) -> None:
        self.replicas[name] = list(servers)
        self._rr[name] = itertools.cycle(servers)

    def close(self) -> None:
        self.server.close()

"""The quart-python template as faas-cli lays it out, and what it must answer.

SHAPES maps each result shape of tests/fixtures/shapes (``?shape=NAME``) to the answer the
upstream python3-http template gives (status, content type, body), so the same table is
checked against index.py alone and behind the real of-watchdog.
"""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template" / "quart-python"
SHAPES_HANDLER = REPO / "tests" / "fixtures" / "shapes"

JSON = "application/json"
# shape: (status, content type (prefix) or None, body: bytes or a JSON value, headers)
SHAPES: dict[str, tuple[int, str | None, Any, dict[str, str]]] = {
    "none": (200, None, b"", {}),
    "str": (200, "text/html", b"plain text", {}),
    "bytes": (200, "text/html", b"\x00\xffraw", {}),
    "plain_dict": (200, JSON, {"answer": 42, "nested": {"ok": True}}, {}),
    "list": (200, JSON, [1, "two", None], {}),
    "dict_body": (201, JSON, {"created": [1, 2]}, {"X-Shape": "dict-body"}),
    "dict_body_own_type": (200, "application/problem+json", {"v": 1}, {}),
    "str_body": (418, "text/plain", b"teapot", {}),
    "bytes_body": (200, "application/octet-stream", b"\x01\x02", {}),
    "no_body": (204, None, b"", {}),
    "body_only": (200, "text/html", b"just a body", {}),
    "header_list": (200, "text/html", b"x", {"X-Multi": "1, 2"}),
    "number_body": (200, "text/html", b"3.5", {}),
    "stream_body": (200, "application/x-ndjson", b"a\nb\n", {}),
}


def check_shape(shape: str, r: Any) -> None:
    """``r`` (a requests.Response) is what the template must answer for ``shape``."""
    status, ctype, body, headers = SHAPES[shape]
    assert r.status_code == status, (shape, r.status_code, r.content[:200])
    if ctype is not None:
        assert r.headers["Content-Type"].startswith(ctype), (shape, r.headers)
    if isinstance(body, bytes):
        assert r.content == body, (shape, r.content[:200])
    else:
        assert json.loads(r.content) == body, (shape, r.content[:200])
    for k, v in headers.items():
        assert r.headers.get(k) == v, (shape, k, r.headers)


def shrinkwrap(tmp_path: Path, handler_dir: Path) -> Path:
    """What `faas-cli build --shrinkwrap` lays out: template + handler copied into function/."""
    build = tmp_path / "build" / "fn"
    shutil.copytree(TEMPLATE, build, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(build / "function")
    shutil.copytree(handler_dir, build / "function", ignore=shutil.ignore_patterns("__pycache__"))
    return build


def raw_http(host: str, port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data`` as it is on a new connection and read until the server closes it."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out

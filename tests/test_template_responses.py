"""index.py answers every result shape as the upstream python3-http template does.

A dict ``body`` goes out as JSON (it was its keys run together), a dict result without
``statusCode`` is a 200 with the dict as JSON (it was its Python repr); str, bytes, None,
headers (a dict or a list of pairs) and a streamed body are unchanged.  index.py runs as
the replica does: its own process, waitress, on a socket it inherits.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.template_env import SHAPES, SHAPES_HANDLER, check_shape, shrinkwrap


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Iterator[str]:
    """index.py with the shapes handler in faas-cli's layout, on a socket bound here: it
    accepts (into the backlog) from the start, so no request has to wait for a poll."""
    build = shrinkwrap(tmp_path_factory.mktemp("shapes"), SHAPES_HANDLER)
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    env = {**os.environ, "QUART_PRELOAD": "", "QUART_LISTEN_FD": str(sock.fileno())}
    env.pop("QUART_HANDLER_DIR", None)
    proc = subprocess.Popen([sys.executable, "index.py"], cwd=build, env=env,
                            pass_fds=(sock.fileno(),), stderr=subprocess.PIPE)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        proc.kill()
        proc.wait()
        sock.close()
        proc.stderr.close()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_result_shape(replica, shape):
    check_shape(shape, requests.post(replica, params={"shape": shape}, data=b"in", timeout=30))


def test_a_dict_result_is_json_on_every_path_and_method(replica):
    for method in ("GET", "PUT", "DELETE"):
        r = requests.request(method, f"{replica}/deep/path", params={"shape": "plain_dict"},
                             timeout=30)
        check_shape("plain_dict", r)

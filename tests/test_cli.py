"""The quart-faas CLI: clear errors, non-zero exits, nothing half-done."""
from __future__ import annotations

import os

from local_provider import services
from tests import pipeline_env


def env(state):
    return {**os.environ, "QUART_STATE_DIR": str(state)}


def test_partition_errors_exit_nonzero_with_a_message(tmp_path):
    e = env(tmp_path / "s")
    for args, needle in [
        (["--model", "all-MiniLM-L6-v2", "--stages", "9"], "larger than the model's 6 layers"),
        (["--model", "gpt-17", "--stages", "2"], "unknown model"),
        (["--synthetic", "bert-huge", "--stages", "2"], "unknown synthetic"),
        (["--model", "all-MiniLM-L6-v2", "--stages", "3", "--split", "a,b"], "comma-separated"),
        (["--model", "all-MiniLM-L6-v2", "--stages", "3", "--split", "1,1,1"], "summing to 6"),
    ]:
        r = pipeline_env.cli(["partition", *args, "--out", str(tmp_path / "out")], e)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
    r = pipeline_env.cli(["partition", "--model", "x", "--synthetic", "bert-mini", "--stages", "2",
                          "--out", str(tmp_path / "out")], e)
    assert r.returncode == 2 and "not allowed with" in r.stderr
    assert not (tmp_path / "out").exists()


def test_up_refuses_a_bad_stack_before_starting_anything(tmp_path):
    state = tmp_path / "state"
    bad = tmp_path / "stack.yml"
    bad.write_text("version: 1.0\nprovider: {name: openfaas}\nfunctions:\n"
                   "  a: {lang: quart-python, handler: ./functions/stage, image: x}\n"
                   "  b: {lang: quart-python, handler: ./functions/stage, image: x,\n"
                   "      labels: {com.openfaas.scale.target: '50'}}\n")
    gw = f"http://127.0.0.1:{services.free_port()}"
    r = pipeline_env.cli(["up", "-f", str(bad), "-g", gw, "--state-dir", str(state),
                          "--no-prometheus"], env(state))
    assert r.returncode == 2 and "functions.b.labels" in r.stderr and "Pro label" in r.stderr
    assert services.recorded(state) == [] and not services.answers(f"{gw}/healthz")


def test_up_refuses_a_missing_partition_or_handler(tmp_path):
    state = tmp_path / "state"
    gw = f"http://127.0.0.1:{services.free_port()}"
    e = {**env(state), "QUART_MODEL_DIR": str(tmp_path / "missing")}
    r = pipeline_env.cli(["up", "-f", str(pipeline_env.REPO / "stack.yml"), "-g", gw,
                          "--state-dir", str(state), "--no-prometheus"], e)
    assert r.returncode == 2 and "quart-faas partition" in r.stderr
    assert services.recorded(state) == []
    stack = tmp_path / "s.yml"
    stack.write_text("provider: {name: openfaas}\nfunctions:\n"
                     "  a: {lang: quart-python, handler: ./nowhere, image: x}\n")
    r = pipeline_env.cli(["up", "-f", str(stack), "-g", gw, "--state-dir", str(state),
                          "--no-prometheus"], e)
    assert r.returncode == 2 and "has no handler.py" in r.stderr
    r = pipeline_env.cli(["up", "-f", str(tmp_path / "none.yml"), "-g", gw,
                          "--state-dir", str(state)], e)
    assert r.returncode == 2 and "stack file not found" in r.stderr


def test_deploy_names_unknown_functions(tmp_path):
    import pytest

    from contracts.stack import load_stack
    from local_provider.deploy import DeployError, deploy

    stack = load_stack(pipeline_env.REPO / "stack.yml", {})
    with pytest.raises(DeployError, match="unknown function"):
        deploy(stack, "http://127.0.0.1:9", ("admin", "x"), only=["minilm-stage-9"])


def test_deploy_labels_override_the_stacks_like_faas_cli_label(tmp_path):
    """A benchmark's cap (``run_live``) reaches the gateway past the stack's CE checks:
    the PUT bodies, as an HTTP server receives them, carry the override on every function."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from contracts.stack import load_stack
    from local_provider.deploy import deploy

    bodies = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        stack = load_stack(pipeline_env.REPO / "stack.yml", {})
        names = [n for n in stack.functions if n.startswith("emu-")]
        deploy(stack, f"http://127.0.0.1:{srv.server_port}", ("admin", "x"), only=names,
               labels={"com.openfaas.scale.max": "8"})
        deploy(stack, f"http://127.0.0.1:{srv.server_port}", ("admin", "x"), only=names[:1])
    finally:
        srv.shutdown()
    assert [b["service"] for b in bodies] == [*names, names[0]]
    assert {b["labels"]["com.openfaas.scale.max"] for b in bodies[:-1]} == {"8"}
    assert bodies[-1]["labels"]["com.openfaas.scale.max"] == "5"  # the stack's own
    assert all(b["labels"]["com.openfaas.scale.min"] == "1" for b in bodies)


def test_down_with_nothing_running(tmp_path):
    r = pipeline_env.cli(["down", "--state-dir", str(tmp_path)], env(tmp_path))
    assert r.returncode == 0 and "nothing to stop" in r.stdout


def test_serve_runs_in_the_foreground_and_stops_on_sigterm(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    import requests

    state = tmp_path / "serve"
    proc = subprocess.Popen([sys.executable, "-m", "quart_faas.cli", "serve", "--gateway-port", "0",
                             "--provider-port", "0", "--metrics-port", "0", "--state-dir",
                             str(state)], cwd=pipeline_env.REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (state / "serve.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        urls = json.loads((state / "serve.json").read_text())
        assert requests.get(urls["gateway_url"] + "/healthz", timeout=5).ok
        assert requests.get(urls["gateway_url"] + "/system/info", timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

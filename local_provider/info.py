"""``/system/info``: the provider's InfoResponse, and the gateway's GatewayInfo around it.

The provider answers faas-provider's shape ``{provider, orchestration,
version: {sha, release}}``; a gateway answers upstream's
``{provider: <that>, version: {commit_message, sha, release}, arch}``, which is
what ``faas-cli version`` reads.  Our gateway asks its provider and wraps the
answer exactly as the upstream gateway does (gateway/handlers/infohandler.go).
"""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Go's runtime.GOARCH for the machines Python reports (upstream prints GOARCH).
GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
          "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386",
          "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@functools.cache
def release() -> str:
    try:
        return metadata.version("quart-faas")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0.0.0+unknown"


@functools.cache
def commit() -> tuple[str, str]:
    """(sha, subject) of the checkout we run from, or ("unknown", "") outside git."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H%n%s"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""
    sha, _, subject = out.strip().partition("\n")
    return (sha or "unknown"), subject


def arch() -> str:
    machine = platform.machine().lower()
    return GOARCH.get(machine, machine)


def gateway_info(provider: dict[str, Any]) -> dict[str, Any]:
    """GatewayInfo around a provider's InfoResponse (which must have been checked)."""
    sha, subject = commit()
    return {"provider": {"provider": provider["provider"],
                         "orchestration": provider["orchestration"],
                         "version": {"sha": provider["version"]["sha"],
                                     "release": provider["version"]["release"]}},
            "version": {"commit_message": subject, "sha": sha, "release": release()},
            "arch": arch()}


def is_provider_info(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("provider"), str)
            and isinstance(doc.get("orchestration"), str) and isinstance(doc.get("version"), dict)
            and all(isinstance(doc["version"].get(k), str) for k in ("sha", "release")))

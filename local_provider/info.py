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

import pydantic

from contracts.wire import Wire

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


class Version(Wire):
    sha: str
    release: str


class ProviderInfo(Wire):
    """faas-provider InfoResponse."""

    provider: str
    orchestration: str
    version: Version

    @classmethod
    def ours(cls) -> ProviderInfo:
        """This provider's: release and sha are the package version and the git commit."""
        return cls(provider="quart-local-provider", orchestration="process",
                   version=Version(sha=commit()[0], release=release()))

    @classmethod
    def read(cls, body: bytes) -> ProviderInfo | None:
        """A provider's answer to /system/info, or None when it is not an InfoResponse."""
        try:
            return cls.model_validate_json(body)
        except pydantic.ValidationError:
            return None


class GatewayVersion(Version):
    commit_message: str = ""


class GatewayInfo(Wire):
    """Upstream gateway's GatewayInfo: the provider's InfoResponse, the gateway's own
    version, Go's GOARCH."""

    provider: ProviderInfo
    version: GatewayVersion
    arch: str


def gateway_info(provider: ProviderInfo) -> GatewayInfo:
    """GatewayInfo around a provider's InfoResponse."""
    sha, subject = commit()
    return GatewayInfo(provider=provider, arch=arch(),
                       version=GatewayVersion(commit_message=subject, sha=sha, release=release()))

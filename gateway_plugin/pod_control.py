"""The client side of a pod's control endpoint: ``GET/PUT /_/quart/workers``.

Contract (issue 14), on the pod's control port (QUART_CONTROL_PORT, default 8082, served
by the pod's zygote and not queued behind the calls, so a saturated pod answers at once;
the same endpoint is also reachable through the watchdog on 8080, behind the calls);
``GET`` -> ``{"workers": N, "ready": R, "busy": B, "pid": zygote_pid}``; ``PUT``
``{"workers": N}`` -> the same shape once applied; both need ``Authorization: Bearer
TOKEN``, the token an OpenFaaS secret (``QUART_CONTROL_TOKEN_FILE``, default
``/var/openfaas/secrets/quart-control-token``) that the plugin and the functions share.
A pod without a token file answers 404 (pod mode off for control), a wrong token 401, a
bad body 400.

Why a session with no retries: the control loop calls every pod once per period and
re-applies idempotent targets next period; a retry inside a cycle would only delay the
other pods.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

PATH = "/_/quart/workers"
DEFAULT_TOKEN_FILE = "/var/openfaas/secrets/quart-control-token"


class ControlError(RuntimeError):
    """A pod's control endpoint could not be used; ``status`` is the HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Workers:
    workers: int
    ready: int
    busy: int
    pid: int


def read_token(path: str | Path) -> str | None:
    """The shared token, or None when the secret is not mounted (control then off)."""
    try:
        token = Path(path).read_text().strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    return token or None


class PodControl:
    def __init__(self, token: str, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self.s = requests.Session()
        self.s.trust_env = False  # pod IPs are never reached through a proxy
        self.s.headers["Authorization"] = f"Bearer {token}"

    def get(self, base_url: str) -> Workers:
        return self._call("GET", base_url, None)

    def put(self, base_url: str, workers: int) -> Workers:
        return self._call("PUT", base_url, {"workers": int(workers)})

    def _call(self, method: str, base_url: str, body: dict | None) -> Workers:
        url = base_url.rstrip("/") + PATH
        try:
            r = self.s.request(method, url, json=body, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise ControlError(f"{method} {url}: {type(e).__name__}") from None
        if r.status_code != 200:
            raise ControlError(f"{method} {url}: {r.status_code} {r.text[:200]}", r.status_code)
        try:
            d = r.json()
            return Workers(int(d["workers"]), int(d["ready"]), int(d["busy"]), int(d["pid"]))
        except (ValueError, KeyError, TypeError):
            raise ControlError(f"{method} {url}: not the control endpoint's answer: "
                               f"{r.text[:200]!r}", r.status_code) from None

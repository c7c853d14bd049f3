"""HTTP basic auth as OpenFaaS speaks it: the gateway checks ``admin`` and the password
from its secret, and calls the provider with the same credentials, so every service that
takes them (provider, gateway, plugin, scorer) checks them the same way, in constant time."""
from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

REALM = 'Basic realm="Restricted"'


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str

    def check(self, header: str | None) -> bool:
        """Constant-time comparison of both user and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_pw = hmac.compare_digest(password.encode(), self.password.encode())
        return bool(sep) and ok_user and ok_pw

    def header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

"""HTTP basic auth for ``/system/*``, credentials found the way upstream finds them.

Order: ``QUART_BASIC_AUTH_PASSWORD_FILE`` (user ``admin``), then upstream's
``secret_mount_path`` with ``basic-auth-user`` and ``basic-auth-password``,
else a random password written to ``<state_dir>/basic-auth-password``
(mode 0600) so a fresh ``serve`` is never left open by accident.
"""
from __future__ import annotations

import logging
import os
import secrets
from dataclasses import replace
from pathlib import Path

from contracts.basic_auth import REALM, BasicAuth
from local_provider.config import AuthConfig

__all__ = ["REALM", "BasicAuth", "from_config", "resolve"]

log = logging.getLogger("local_provider.auth")

def resolve(auth: AuthConfig, state_dir: Path) -> AuthConfig:
    """Fill in user and password from files; the result is what both apps check."""
    if not auth.enabled or auth.password is not None:
        return auth
    if auth.password_file is not None:
        return replace(auth, user="admin", password=_read(auth.password_file))
    if auth.secret_mount_path is not None:
        return replace(auth, user=_read(auth.secret_mount_path / "basic-auth-user"),
                       password=_read(auth.secret_mount_path / "basic-auth-password"))
    path = state_dir / "basic-auth-password"
    if path.is_file():
        password = _read(path)
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        log.warning("no password configured: generated one for user admin in %s", path)
    return replace(auth, user="admin", password=password, password_file=path)


def _read(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as e:
        raise SystemExit(f"cannot read basic-auth secret {path}: {e.strerror}") from None
    if not value:
        raise SystemExit(f"basic-auth secret {path} is empty")
    return value


def from_config(auth: AuthConfig) -> BasicAuth | None:
    if not auth.enabled:
        return None
    assert auth.password is not None, "call resolve() first"
    return BasicAuth(auth.user, auth.password)

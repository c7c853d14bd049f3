"""Function secrets: the faas-provider secrets API (``/system/secrets``) stored on disk.

A secret is a file ``<QUART_STATE_DIR>/secrets/<name>`` (mode 0600, folder 0700),
written atomically.  A function that lists secrets (``secrets:`` in stack.yml)
sees exactly those, as files in its own folder
``<QUART_STATE_DIR>/secret-mounts/<function>/<name>`` (links to the store, so an
update reaches running replicas as a mounted Kubernetes secret does); its
replicas get that folder in ``QUART_SECRETS_DIR``, the local stand-in for
OpenFaaS's ``/var/openfaas/secrets``.  A handler reads
``os.environ.get("QUART_SECRETS_DIR", "/var/openfaas/secrets") + "/NAME"``
and runs unchanged on both.  Values never appear in a listing or a log.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_provider.config import NAMESPACE
from local_provider.types import ValidationError, check_namespace

# A Kubernetes secret name (DNS-1123 subdomain), which is also a safe file name.
SECRET_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_MAX = 253
VALUE_MAX = 1 << 20  # Kubernetes' own limit for a secret


class SecretExists(Exception):
    pass


class SecretNotFound(KeyError):
    pass


def check_secret_name(value: Any, field_name: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field_name, "required, a non-empty string")
    if len(value) > SECRET_MAX or not SECRET_RE.fullmatch(value) or ".." in value:
        raise ValidationError(field_name, f"{value!r} is not a DNS-1123 subdomain (lower-case "
                              "letters, digits, '-' and '.', starting and ending with a letter "
                              f"or digit, at most {SECRET_MAX} characters)")
    return value


@dataclass(frozen=True)
class SecretRequest:
    """Body of POST/PUT/DELETE ``/system/secrets`` (faas-provider ``types.Secret``)."""

    name: str
    namespace: str = NAMESPACE
    data: bytes | None = None  # None: no value given (DELETE)

    @classmethod
    def from_json(cls, raw: Any, need_value: bool) -> SecretRequest:
        """``need_value``: POST and PUT; a DELETE names the secret only (a value it carries
        must still be well-formed: a request that breaks the schema is refused)."""
        if not isinstance(raw, dict):
            raise ValidationError("body", "must be a JSON object")
        name = check_secret_name(raw.get("name"))
        namespace = check_namespace(raw.get("namespace"))
        data = _value(raw)
        if need_value and data is None:
            raise ValidationError("value", "required (a string), or rawValue (base64)")
        return cls(name, namespace, data)


def _value(raw: dict[str, Any]) -> bytes | None:
    value, raw_value = raw.get("value"), raw.get("rawValue")
    if value is not None and not isinstance(value, str):
        raise ValidationError("value", "must be a string")
    if raw_value is not None and not isinstance(raw_value, str):
        raise ValidationError("rawValue", "must be a base64 string")
    if raw_value:  # Go []byte: base64 in JSON; it wins over value, as upstream
        try:
            data = base64.b64decode(raw_value, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("rawValue", "is not valid base64") from None
    elif value is not None:
        data = value.encode()
    elif raw_value is not None:
        data = b""
    else:
        return None
    if len(data) > VALUE_MAX:
        raise ValidationError("value", f"larger than {VALUE_MAX} bytes")
    return data


class SecretStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).absolute() / "secrets"
        self.mounts = Path(state_dir).absolute() / "secret-mounts"
        self.lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / check_secret_name(name)

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_file() and SECRET_RE.fullmatch(p.name))
        except FileNotFoundError:
            return []

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        # mkstemp: mode 0600, and a short name (a 253-byte secret name + suffixes would
        # pass the 255-byte file name limit; found by the fuzzer)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._path(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, req: SecretRequest) -> None:
        assert req.data is not None
        with self.lock:
            if self.exists(req.name):
                raise SecretExists(req.name)
            self._write(req.name, req.data)

    def update(self, req: SecretRequest) -> None:
        assert req.data is not None
        with self.lock:
            if not self.exists(req.name):
                raise SecretNotFound(req.name)
            self._write(req.name, req.data)

    def delete(self, name: str) -> None:
        with self.lock:
            try:
                self._path(name).unlink()
            except FileNotFoundError:
                raise SecretNotFound(name) from None

    def missing(self, names: list[str]) -> list[str]:
        return [n for n in names if not SECRET_RE.fullmatch(n) or not self.exists(n)]

    def mount(self, function: str, names: list[str]) -> Path:
        """The function's secrets folder, holding links to exactly ``names`` (and nothing else)."""
        folder = self.mounts / function
        with self.lock:
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self.mounts, 0o700)
            for old in folder.iterdir():
                if old.name not in names:
                    old.unlink()
            for name in names:
                link = folder / name
                if not link.is_symlink():
                    link.unlink(missing_ok=True)
                    link.symlink_to(self._path(name))
        return folder

    def unmount(self, function: str) -> None:
        with self.lock:
            shutil.rmtree(self.mounts / function, ignore_errors=True)

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
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationInfo, field_validator, model_validator

from contracts.wire import Invalid, Wire, check, parse
from contracts.wire import explained as _explained
from local_provider.config import NAMESPACE
from local_provider.types import Namespace

# A Kubernetes secret name (DNS-1123 subdomain), which is also a safe file name.
SECRET_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_MAX = 253
VALUE_MAX = 1 << 20  # Kubernetes' own limit for a secret

SecretKey = Annotated[str, Field(max_length=SECRET_MAX, pattern=SECRET_RE.pattern),
                      _explained("a DNS-1123 subdomain (lower-case letters, digits, '-' and "
                                 "'.', starting and ending with a letter or digit, at most "
                                 f"{SECRET_MAX} characters)", lambda v: ".." not in v)]


class SecretExists(Exception):
    pass


class SecretNotFound(KeyError):
    pass


class Secret(Wire):
    """faas-provider types.Secret, the body of POST/PUT/DELETE /system/secrets; rawValue
    (base64) wins over value."""

    name: SecretKey
    namespace: Namespace = NAMESPACE
    value: str | None = None
    raw_value: str | None = Field(None, alias="rawValue", json_schema_extra={"format": "byte"})

    @field_validator("raw_value")
    @classmethod
    def _base64(cls, raw: str | None) -> str | None:
        if raw:  # Go []byte: base64 in JSON
            try:
                base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("is not valid base64") from None
        return raw

    @model_validator(mode="after")
    def _sized(self, info: ValidationInfo) -> Secret:
        """POST and PUT (``need_value`` in the context) carry a value; a DELETE names the
        secret only (a value it carries must still be well-formed)."""
        data = self.data
        if data is None and (info.context or {}).get("need_value"):
            raise Invalid("value", "required (a string), or rawValue (base64)")
        if data is not None and len(data) > VALUE_MAX:
            raise Invalid("value", f"larger than {VALUE_MAX} bytes")
        return self

    @property
    def data(self) -> bytes | None:
        """The secret's bytes; None: no value given (DELETE)."""
        if self.raw_value:
            return base64.b64decode(self.raw_value, validate=True)
        if self.value is not None:
            return self.value.encode()
        return b"" if self.raw_value is not None else None

    @classmethod
    def from_json(cls, raw: Any, need_value: bool) -> Secret:
        return parse(cls, raw, {"need_value": need_value})


class SecretName(Wire):
    """One element of GET /system/secrets: a name, never a value."""

    name: str
    namespace: str


_SECRET_KEY = TypeAdapter(SecretKey)


def check_secret_name(value: Any, field_name: str = "name") -> str:
    return check(_SECRET_KEY, value, field_name)


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

    def create(self, req: Secret) -> None:
        assert req.data is not None
        with self.lock:
            if self.exists(req.name):
                raise SecretExists(req.name)
            self._write(req.name, req.data)

    def update(self, req: Secret) -> None:
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

"""Where the scorer's state lives between restarts: Redis (primary), SQLite, or nowhere.

Redis keys (prefix ``SCHEDULER_REDIS_PREFIX``, default ``quart:scorer:``):

  posteriors   hash: field JSON ``[job_type, gpu_type]`` -> JSON ``{n, mu, var, noise}``
  slowdowns    hash: field JSON ``[job_type, colocated_job_type]`` -> JSON ``{s, n}``
  counters     hash: decisions, exploratory, capped, observations (absolute values)
  window       string of ``0``/``1``: the exploration window, oldest first
  schema       ``1``

SQLite (the seed's store): one table ``state(kind, key, value)`` with the
same records.  Every save writes absolute values of what changed, in one
transaction (MULTI/EXEC; one SQLite transaction), so a save may be retried
or repeated after an outage without double counting.  Backends raise
``StoreError`` and nothing else; what to do about it is the service's job.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import redis

log = logging.getLogger("scorer.store")

SCHEMA = "1"

Key = tuple[str, str]


class StoreError(Exception):
    pass


@dataclass
class Snapshot:
    """Records to write (only what changed) or that were read (everything)."""
    posteriors: dict[Key, dict[str, Any]] = field(default_factory=dict)
    slowdowns: dict[Key, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] | None = None
    window: str | None = None

    def empty(self) -> bool:
        return not (self.posteriors or self.slowdowns or self.counters is not None
                    or self.window is not None)


class Backend(Protocol):
    name: str
    persistent: bool

    def load(self) -> Snapshot: ...

    def save(self, snap: Snapshot) -> None: ...


def encode_key(k: Key) -> str:
    return json.dumps(list(k), separators=(",", ":"))


def decode_key(raw: str | bytes) -> Key:
    a, b = json.loads(raw)
    if not (isinstance(a, str) and isinstance(b, str)):
        raise TypeError("a key is two strings")
    return a, b


def _records(items: Iterable[tuple[str | bytes, str | bytes]]) -> dict[Key, dict[str, Any]]:
    """Decoded records; one that does not decode is skipped and logged, not fatal."""
    out: dict[Key, dict[str, Any]] = {}
    for raw_key, raw in items:
        try:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise TypeError("not an object")
            out[decode_key(raw_key)] = value
        except (ValueError, TypeError) as e:
            log.warning("skipping unreadable record %r: %s", raw_key, e)
    return out


class MemoryBackend:
    """SCHEDULER_DB=memory: nothing survives a restart (tests, throwaway runs)."""
    name, persistent = "memory", False

    def load(self) -> Snapshot:
        return Snapshot()

    def save(self, snap: Snapshot) -> None:
        pass


class RedisBackend:
    name, persistent = "redis", True

    def __init__(self, url: str, prefix: str = "quart:scorer:",
                 client: redis.Redis | None = None) -> None:
        self.r = client or redis.Redis.from_url(url, socket_timeout=1.0,
                                                socket_connect_timeout=0.5)
        self.p = prefix

    def k(self, key: str) -> str:
        return self.p + key

    def load(self) -> Snapshot:
        try:
            pipe = self.r.pipeline(transaction=True)
            for h in ("posteriors", "slowdowns", "counters"):
                pipe.hgetall(self.k(h))
            pipe.get(self.k("window"))
            pipe.get(self.k("schema"))
            post, slow, counters, window, schema = pipe.execute()
        except redis.RedisError as e:
            raise StoreError(f"redis: {e}") from e
        if schema is not None and schema.decode() != SCHEMA:
            raise StoreError(f"redis: schema {schema.decode()!r} under {self.p!r}, "
                             f"this scorer writes {SCHEMA!r}")
        try:
            counts = {f.decode(): int(v) for f, v in counters.items()} if counters else None
        except ValueError:
            log.warning("skipping unreadable counters %r", counters)
            counts = None
        return Snapshot(_records(post.items()), _records(slow.items()), counts,
                        window.decode() if window is not None else None)

    def save(self, snap: Snapshot) -> None:
        if snap.empty():
            return
        try:
            pipe = self.r.pipeline(transaction=True)
            if snap.posteriors:
                pipe.hset(self.k("posteriors"), mapping={
                    encode_key(k): json.dumps(v) for k, v in snap.posteriors.items()})
            if snap.slowdowns:
                pipe.hset(self.k("slowdowns"), mapping={
                    encode_key(k): json.dumps(v) for k, v in snap.slowdowns.items()})
            if snap.counters is not None:
                pipe.hset(self.k("counters"), mapping={k: str(v) for k, v in snap.counters.items()})
            if snap.window is not None:
                pipe.set(self.k("window"), snap.window)
            pipe.set(self.k("schema"), SCHEMA)
            pipe.execute()
        except redis.RedisError as e:
            raise StoreError(f"redis: {e}") from e


class SqliteBackend:
    """SCHEDULER_DB=sqlite: the seed's file database, one transaction per save."""
    name, persistent = "sqlite", True

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=2.0, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS state (kind TEXT NOT NULL, key TEXT NOT "
                           "NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key))")
                db.commit()
            except (sqlite3.Error, OSError) as e:
                raise StoreError(f"sqlite {self.path}: {e}") from e
            self._db = db
        return self._db

    def load(self) -> Snapshot:
        try:
            rows = self._conn().execute("SELECT kind, key, value FROM state").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"sqlite {self.path}: {e}") from e
        snap = Snapshot(_records((k, v) for kind, k, v in rows if kind == "posterior"),
                        _records((k, v) for kind, k, v in rows if kind == "slowdown"))
        for kind, key, value in rows:
            if kind == "counter" and value.isdigit():
                snap.counters = {**(snap.counters or {}), key: int(value)}
            elif kind == "window":
                snap.window = value
        return snap

    def save(self, snap: Snapshot) -> None:
        rows = [("posterior", encode_key(k), json.dumps(v)) for k, v in snap.posteriors.items()]
        rows += [("slowdown", encode_key(k), json.dumps(v)) for k, v in snap.slowdowns.items()]
        rows += [("counter", k, str(v)) for k, v in (snap.counters or {}).items()]
        if snap.window is not None:
            rows.append(("window", "", snap.window))
        if not rows:
            return
        try:
            db = self._conn()
            with db:  # one transaction: all of it or none of it
                db.executemany("INSERT OR REPLACE INTO state (kind, key, value) "
                               "VALUES (?, ?, ?)", rows)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite {self.path}: {e}") from e

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def open_backend(db: str, redis_url: str, redis_prefix: str, db_path: str) -> Backend:
    if db == "redis":
        return RedisBackend(redis_url, redis_prefix)
    if db == "sqlite":
        return SqliteBackend(db_path)
    return MemoryBackend()

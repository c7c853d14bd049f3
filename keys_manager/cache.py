"""The hierarchical parameter cache of one node (tiers T3 origin -> T2 local disk -> T1 /dev/shm).

Why tiers: a cold replica that reads its stage from the origin (a partition
directory, possibly on a network volume) pays seconds; one that maps a file
already in shared memory pays milliseconds and shares the pages with its
siblings.  ``ensure`` promotes a stage on use, verifying the manifest's sha256
at every hop, so a corrupt or truncated copy in a fast tier is replaced from
the slower one instead of being served.  T1 is bounded by a memory threshold
(seed 001's ``memory_threshold``): least-recently-used segments that no
running replica pins are evicted to make room.
"""
from __future__ import annotations

import errno
import shutil
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.manifest import read_manifest_cached
from keys_manager.cache_index import INDEX, Record, load_index, save_index
from keys_manager.segment import (
    TMP_PREFIX,
    SegmentCorrupt,
    StageKey,
    copy_verified,
    map_stage,
    sha256_of,
)
from keys_manager.threshold import parse_threshold

__all__ = ["CacheFull", "Entry", "ParamCache", "StageKey", "map_stage", "parse_threshold"]

TIERS = ("T1", "T2", "T3")


class CacheFull(RuntimeError):
    """T1 cannot take a segment without evicting pinned stages (or it exceeds the threshold)."""


@dataclass(frozen=True)
class Entry:
    """Where a stage lives after ``ensure``: ``tier`` served it, ``path`` is the T1 file."""

    key: StageKey
    tier: str
    path: Path
    disk_path: Path
    origin: Path
    bytes: int
    sha256: str
    segment_id: str = ""  # changes whenever the T1 file is replaced (rebuilt after corruption)
    evicted: tuple[StageKey, ...] = ()  # stages this call evicted from T1 to make room


class ParamCache:
    """One node's T2 (``node_dir``) and T1 (``shm_dir``) tiers; thread-safe.

    Both directories must be dedicated to the cache: ``recover`` deletes
    whatever in them is not a segment the index knows.
    """

    def __init__(self, node_dir: Path, shm_dir: Path, memory_threshold_bytes: int,
                 recover: bool = True):
        if memory_threshold_bytes <= 0:
            raise ValueError("memory_threshold_bytes must be > 0")
        self.node_dir, self.shm_dir = Path(node_dir).resolve(), Path(shm_dir).resolve()
        if self.node_dir == self.shm_dir:
            raise ValueError("node_dir and shm_dir must be different directories")
        self.threshold = int(memory_threshold_bytes)
        for d in (self.node_dir, self.shm_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._index: dict[StageKey, Record] = {}
        self._t1: OrderedDict[StageKey, int] = OrderedDict()  # LRU order -> bytes
        self._t2: dict[StageKey, int] = {}
        self._pins: Counter[StageKey] = Counter()
        self._fp: dict[StageKey, tuple[int, ...] | None] = {}  # verified T1 fingerprints
        self._evicted: list[StageKey] = []
        self.hits: dict[str, int] = dict.fromkeys(TIERS, 0)
        self.misses: dict[str, int] = dict.fromkeys(TIERS, 0)
        self.bytes_promoted: dict[str, int] = dict.fromkeys(("T1", "T2"), 0)
        self.evictions = 0
        self.corruptions = 0
        if recover:
            self.recover()

    # ------------------------------------------------------------ paths and bookkeeping

    def segment_id(self, key: StageKey) -> str:
        """Identity of the T1 file as verified: its inode, new on every rebuild (an inode
        cannot be reused while a process still maps the old file)."""
        with self._lock:
            fp = self._fp.get(key)
            return str(fp[0]) if fp else ""

    def _fingerprint(self, key: StageKey) -> tuple[int, ...] | None:
        """Inode, size, mtime and ctime: any write, truncation, chmod or replacement of the
        T1 file changes one of them, so an unchanged fingerprint needs no re-hash."""
        try:
            st = self.shm_path(key).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def shm_path(self, key: StageKey) -> Path:
        return self.shm_dir / key.filename

    def disk_path(self, key: StageKey) -> Path:
        return self.node_dir / key.filename

    @property
    def shm_bytes(self) -> int:
        return sum(self._t1.values())

    def _save_index(self) -> None:
        save_index(self.node_dir, self._index)

    # ------------------------------------------------------------ ensure

    def ensure(self, origin_dir: Path, stage: int, model: str | None = None,
               verify: bool = True) -> Entry:
        """Make ``stage`` of the partition at ``origin_dir`` resident in T1; promote on the way.

        ``model`` names the key (default: the manifest's model).  If the index
        holds the same key with a different sha256 (another partition of the
        same model), the cached copies are stale and are replaced.
        ``verify=False`` skips re-hashing copies already in T1/T2 (sizes are
        still checked) for very large segments.
        """
        origin_dir = Path(origin_dir)
        manifest = read_manifest_cached(origin_dir)
        stages = manifest.get("stages", [])
        if isinstance(stage, bool) or not isinstance(stage, int) or not 0 <= stage < len(stages):
            raise ValueError(f"stage {stage!r} out of range: {origin_dir} has {len(stages)} stages")
        info = stages[stage]
        key = StageKey(model if model is not None else str(manifest.get("model", "")), stage)
        origin = origin_dir / Path(info["file"]).name
        rec = Record(str(info["sha256"]), int(info["file_bytes"]), str(origin))
        with self._lock:
            return self._ensure_locked(key, rec, verify)

    def _ensure_locked(self, key: StageKey, rec: Record, verify: bool) -> Entry:
        known = self._index.get(key)
        if known is not None and known.sha256 != rec.sha256:
            self._drop(key, disk=True)  # stale: same name, other content
        if key in self._t1 and self._t1_valid(key, rec, verify):
            self.hits["T1"] += 1
            self._t1.move_to_end(key)
            return self._entry(key, "T1", rec)
        self.misses["T1"] += 1
        self._discard_t1(key)
        self._evicted = []
        try:
            tier = self._ensure_disk(key, rec, verify)
            self._index[key] = rec
            self._publish(key, rec)
        finally:
            self._save_index()
        return self._entry(key, tier, rec, tuple(self._evicted))

    def _t1_valid(self, key: StageKey, rec: Record, verify: bool) -> bool:
        fp = self._fingerprint(key)
        if fp is not None and fp == self._fp.get(key):
            return True  # untouched since we verified and published it
        ok = self._valid(self.shm_path(key), rec, verify)
        if ok and verify:
            self._fp[key] = self._fingerprint(key)
        return ok

    def _ensure_disk(self, key: StageKey, rec: Record, verify: bool) -> str:
        """Make T2 hold a verified copy; return the tier that served it (T2 or T3)."""
        disk = self.disk_path(key)
        if self._valid(disk, rec, verify):
            self.hits["T2"] += 1
            self._t2[key] = rec.bytes
            return "T2"
        self.misses["T2"] += 1
        self._t2.pop(key, None)
        origin = Path(rec.origin)
        if not origin.is_file():
            self.misses["T3"] += 1
            raise FileNotFoundError(f"{origin}: the origin tier has no such stage file")
        try:
            copy_verified(origin, disk, rec.sha256, rec.bytes)
        except SegmentCorrupt as e:
            self.misses["T3"] += 1
            raise SegmentCorrupt(f"origin copy is corrupt, re-partition it: {e}") from None
        self.hits["T3"] += 1
        self._t2[key] = rec.bytes
        self.bytes_promoted["T2"] += rec.bytes
        return "T3"

    def _publish(self, key: StageKey, rec: Record) -> None:
        """Copy T2 -> T1 after making room; CacheFull leaves T1 exactly as it was."""
        self._make_room(key, rec.bytes)
        try:
            copy_verified(self.disk_path(key), self.shm_path(key), rec.sha256, rec.bytes)
        except SegmentCorrupt:
            # T2 went bad between the check and the copy: fetch again from T3 once.
            self._t2.pop(key, None)
            self.disk_path(key).unlink(missing_ok=True)
            self._ensure_disk(key, rec, verify=True)
            copy_verified(self.disk_path(key), self.shm_path(key), rec.sha256, rec.bytes)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EDQUOT):
                raise
            # the threshold allowed it but the tmpfs is smaller (or shared with others):
            # the temp copy is gone (copy_verified), nothing half-written is visible
            raise CacheFull(f"{key}: {self.shm_dir} is out of space ({e.strerror}); lower "
                            f"QUART_MEMORY_THRESHOLD or grow the tmpfs") from None
        self._fp[key] = self._fingerprint(key)
        self._t1[key] = rec.bytes
        self.bytes_promoted["T1"] += rec.bytes

    def _valid(self, path: Path, rec: Record, verify: bool) -> bool:
        """Does ``path`` hold the segment?  A wrong size or checksum counts as corruption."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        ok = size == rec.bytes and (not verify or sha256_of(path)[0] == rec.sha256)
        if not ok:
            self.corruptions += 1
            path.unlink(missing_ok=True)
            return False
        return True

    def _entry(self, key: StageKey, tier: str, rec: Record,
               evicted: tuple[StageKey, ...] = ()) -> Entry:
        return Entry(key, tier, self.shm_path(key), self.disk_path(key), Path(rec.origin),
                     rec.bytes, rec.sha256, self.segment_id(key), evicted)

    # ------------------------------------------------------------ threshold, eviction, pins

    def _make_room(self, key: StageKey, size: int) -> None:
        if size > self.threshold:
            raise CacheFull(f"{key} needs {size} bytes, more than the whole T1 threshold "
                            f"({self.threshold} bytes)")
        victims, free = [], self.threshold - self.shm_bytes
        for k, b in self._t1.items():  # oldest first
            if free >= size:
                break
            if k != key and self._pins[k] == 0:
                victims.append(k)
                free += b
        if free < size:
            pinned = sorted(str(k) for k in self._t1 if self._pins[k])
            raise CacheFull(f"{key} needs {size} bytes in T1 but only {free} of {self.threshold} "
                            f"can be freed; pinned stages: {', '.join(pinned) or 'none'}")
        for k in victims:
            self._discard_t1(k)
            self.evictions += 1
            self._evicted.append(k)

    def _discard_t1(self, key: StageKey) -> None:
        self._t1.pop(key, None)
        self._fp.pop(key, None)
        self.shm_path(key).unlink(missing_ok=True)

    def _drop(self, key: StageKey, disk: bool) -> None:
        self._discard_t1(key)
        if disk:
            self._t2.pop(key, None)
            self.disk_path(key).unlink(missing_ok=True)
            self._index.pop(key, None)

    def pin(self, key: StageKey) -> int:
        """A running replica maps the T1 file: never evict it.  Returns the pin count."""
        with self._lock:
            self._pins[key] += 1
            return self._pins[key]

    def unpin(self, key: StageKey) -> int:
        with self._lock:
            if self._pins[key] <= 0:
                raise ValueError(f"{key} is not pinned")
            self._pins[key] -= 1
            if self._pins[key] == 0:
                del self._pins[key]
            return self._pins[key]

    def evict(self, key: StageKey, disk: bool = False) -> bool:
        """Drop ``key`` from T1 (and T2 with ``disk``); refused while pinned."""
        with self._lock:
            if self._pins[key]:
                raise ValueError(f"{key} is pinned by {self._pins[key]} replica(s)")
            present = key in self._t1 or (disk and key in self._t2)
            self._drop(key, disk)
            if present:
                self.evictions += 1
                self._save_index()
            return present

    def scrub(self) -> list[StageKey]:
        """Re-hash every T1 segment (writes through a shared mapping of a tmpfs file need not
        change its mtime, so fingerprints alone cannot see them); rebuild the bad ones from
        T2/T3.  Returns the keys rebuilt: their old pages may still be mapped by replicas."""
        rebuilt = []
        with self._lock:
            for key in list(self._t1):
                rec = self._index.get(key)
                if rec is not None and self._valid(self.shm_path(key), rec, True):
                    self._fp[key] = self._fingerprint(key)
                    continue
                self._discard_t1(key)
                if rec is not None:
                    self._evicted = []
                    self._ensure_disk(key, rec, True)
                    self._publish(key, rec)
                    rebuilt.append(key)
            self._save_index()
        return rebuilt

    # ------------------------------------------------------------ restart and shutdown

    def recover(self) -> dict[str, list[str]]:
        """Rebuild state after a crash: drop leftovers, keep segments the index vouches for."""
        with self._lock:
            self._index = load_index(self.node_dir)
            removed: list[str] = []
            kept: list[str] = []
            self._t2 = self._scan(self.node_dir, removed, kept)
            t1 = self._scan(self.shm_dir, removed, kept)
            by_age = sorted(t1, key=lambda k: self.shm_path(k).stat().st_mtime_ns)
            self._t1 = OrderedDict((k, t1[k]) for k in by_age)
            self._index = {k: r for k, r in self._index.items() if k in self._t2 or k in self._t1}
            self._save_index()
            return {"removed": removed, "kept": kept}

    def _scan(self, d: Path, removed: list[str], kept: list[str]) -> dict[StageKey, int]:
        found: dict[StageKey, int] = {}
        for p in sorted(d.iterdir()):
            if d == self.node_dir and p.name == INDEX:
                continue
            key = None if p.name.startswith(TMP_PREFIX) else StageKey.from_filename(p.name)
            rec = self._index.get(key) if key is not None else None
            if key is not None and rec is not None and p.is_file() and not p.is_symlink() \
                    and p.stat().st_size == rec.bytes:
                found[key] = rec.bytes
                kept.append(str(p))
                continue
            removed.append(str(p))
            _remove(p)
        return found

    def close(self, remove_shm: bool = True) -> None:
        """Release T1: shared memory is not freed by process exit, so leaving files leaks RAM."""
        with self._lock:
            if remove_shm:
                for k in list(self._t1):
                    self._discard_t1(k)
                for p in self.shm_dir.glob(TMP_PREFIX + "*"):
                    _remove(p)
                try:
                    self.shm_dir.rmdir()
                except OSError:
                    pass  # foreign files: not ours to delete
            self._save_index()

    # ------------------------------------------------------------ metrics

    def status(self) -> dict[str, Any]:
        """Counters and residency for ``/metrics`` (plain JSON types only)."""
        with self._lock:
            return {
                "threshold_bytes": self.threshold,
                "bytes": {"T1": self.shm_bytes, "T2": sum(self._t2.values())},
                "bytes_promoted": dict(self.bytes_promoted),
                "hits": dict(self.hits), "misses": dict(self.misses),
                "evictions": self.evictions, "corruptions": self.corruptions,
                "pinned": {str(k): n for k, n in self._pins.items()},
                "entries": {str(k): {"sha256": r.sha256, "bytes": r.bytes, "origin": r.origin,
                                     "T1": k in self._t1, "T2": k in self._t2}
                            for k, r in sorted(self._index.items())},
            }


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)

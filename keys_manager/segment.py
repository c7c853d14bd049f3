"""Segments: the files the parameter cache moves between tiers, and how a replica maps one.

Kept apart from ``cache.py`` because the fork server maps segments without
needing the cache's bookkeeping, and because the safetensors parsing is the
part that must be strict: a segment under ``/dev/shm`` is read by every replica
of a node, so a malformed header must fail loudly rather than hand out tensors
that alias the wrong bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

SUFFIX = ".safetensors"
TMP_PREFIX = ".tmp-"
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEGMENT_RE = re.compile(r"(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,127})"
                         r"--stage-(?P<stage>0|[1-9][0-9]*)" + re.escape(SUFFIX))
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


@dataclass(frozen=True, order=True)
class StageKey:
    """(model, stage), validated so that the file name derived from it cannot escape a tier."""

    model: str
    stage: int

    def __post_init__(self) -> None:
        m = self.model
        if not isinstance(m, str) or not _MODEL_RE.fullmatch(m) or ".." in m:
            raise ValueError(f"invalid model name {self.model!r}: use letters, digits, '.', '_', "
                             "'-' (at most 128, no '..', not starting with a symbol)")
        if isinstance(self.stage, bool) or not isinstance(self.stage, int) or self.stage < 0:
            raise ValueError(f"invalid stage {self.stage!r}: must be an int >= 0")

    @property
    def filename(self) -> str:
        return f"{self.model}--stage-{self.stage}{SUFFIX}"

    def __str__(self) -> str:
        return f"{self.model}--stage-{self.stage}"

    @classmethod
    def parse(cls, text: str) -> StageKey:
        """Inverse of ``str(key)``; ValueError for anything else."""
        key = cls.from_filename(f"{text}{SUFFIX}")
        if key is None:
            raise ValueError(f"invalid stage key {text!r}: expected MODEL--stage-N")
        return key

    @classmethod
    def from_filename(cls, name: str) -> StageKey | None:
        """The key a segment file name stands for, or None for anything else (stray files)."""
        m = _SEGMENT_RE.fullmatch(name)
        if m is None or ".." in m["model"]:
            return None
        return cls(m["model"], int(m["stage"]))


# ---------------------------------------------------------------- files

def sha256_of(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


class SegmentCorrupt(ValueError):
    """A copy's checksum or size differs from the manifest: the source tier is bad."""


def copy_verified(src: Path, dest: Path, sha256: str, size: int) -> None:
    """Copy ``src`` to ``dest`` atomically: temp file (0600) in dest's dir, fsync, verify, rename.

    The final name only ever names a complete, verified segment, so a crash or
    a reader racing the copy sees either the old state or the new file.
    """
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)  # mkstemp: mode 0600
    try:
        h = hashlib.sha256()
        n = 0
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if n != size or h.hexdigest() != sha256:
            raise SegmentCorrupt(f"{src}: {n} bytes, sha256 {h.hexdigest()[:12]}..., expected "
                                 f"{size} bytes, sha256 {sha256[:12]}...")
        os.rename(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def fsync_dir(d: Path) -> None:
    """Make a rename durable (matters for the disk tier; harmless on tmpfs)."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: object, durable: bool = True,
                      indent: int | None = 1) -> None:
    """JSON written like a segment: temp file, fsync, rename; never a torn index.
    ``indent=None`` for a file on a hot path: only then does json use its C encoder."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=indent, sort_keys=indent is not None))
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- safetensors mapping

@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> tuple[list[TensorSpec], int]:
    """Parse and strictly validate a safetensors header; returns (specs, file size)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path}: header length {n} does not fit in {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")  # noqa: TRY004 - a malformed file, not a caller bug
    base, data_len = 8 + n, size - 8 - n
    specs = [_spec(path, name, v, base, data_len) for name, v in header.items()
             if name != "__metadata__"]
    _check_overlaps(path, specs)
    return specs, size


def _spec(path: Path, name: str, v: object, base: int, data_len: int) -> TensorSpec:
    if not isinstance(v, dict):
        raise ValueError(f"{path}: entry {name!r} is not an object")  # noqa: TRY004
    raw = v.get("dtype")
    dt = DTYPES.get(raw) if isinstance(raw, str) else None
    if dt is None:
        raise ValueError(f"{path}: {name!r} has unsupported dtype {v.get('dtype')!r}")
    shape, offs = v.get("shape"), v.get("data_offsets")
    if (not isinstance(shape, list) or not all(_is_uint(d) for d in shape)
            or not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs)):
        raise ValueError(f"{path}: {name!r} has a malformed shape or data_offsets")
    begin, end = offs
    if not begin <= end <= data_len:
        raise ValueError(f"{path}: {name!r} offsets {offs} outside the {data_len}-byte data area")
    want = math.prod(shape) * _itemsize(dt)
    if end - begin != want:
        raise ValueError(f"{path}: {name!r} spans {end - begin} bytes, shape {shape} needs {want}")
    return TensorSpec(name, dt, tuple(shape), base + begin, end - begin)


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _itemsize(dt: torch.dtype) -> int:
    return torch.empty(0, dtype=dt).element_size()


def _check_overlaps(path: Path, specs: list[TensorSpec]) -> None:
    spans = sorted((s.start, s.start + s.nbytes, s.name) for s in specs if s.nbytes)
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise ValueError(f"{path}: tensors {a!r} and {b!r} overlap")


def map_stage(path: Path) -> dict[str, torch.Tensor]:
    """Map a segment privately (MAP_PRIVATE, copy-on-write) and return tensor views into it.

    Every replica of a node maps the same T1 file: pages are shared through
    the page cache until someone writes, and a write only dirties that
    process's private copy, never the file or another replica.  Nothing is
    read into anonymous memory up front.
    """
    path = Path(path)
    specs, size = read_header(path)
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    assert isinstance(storage, torch.UntypedStorage)  # torch's stub: _StorageBase | TypedStorage
    MAPPED.append((storage.data_ptr(), size, storage))
    return {s.name: _view(storage, s) for s in specs}


MAPPED: list[tuple[int, int, torch.UntypedStorage]] = []  # (address, bytes, keep-alive)
MADV_WILLNEED, MADV_POPULATE_READ = 3, 22


def populate_mapped() -> int:
    """Fill this process's page tables for every mapped segment; returns bytes covered.

    Why: fork() does not copy the page-table entries of a file mapping the parent
    never wrote to, so a forked replica would otherwise take one minor fault per
    4 KiB page on its first request (72k faults, ~35 ms for a 288 MiB stage).
    ``MADV_POPULATE_READ`` (Linux 5.14) maps them in one call, before the replica
    reports ready; older kernels get ``MADV_WILLNEED`` (read-ahead only)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = os.sysconf("SC_PAGE_SIZE")
    done = 0
    for addr, size, _ in MAPPED:
        start = addr - addr % page
        length = size + (addr - start)
        if libc.madvise(start, length, MADV_POPULATE_READ) != 0:
            libc.madvise(start, length, MADV_WILLNEED)
        done += size
    return done


def share_page_tables() -> int:
    """In the zygote, before forking: make fork() hand the weights' page tables to children.

    Linux copies a VMA's page-table entries at fork only when the VMA has an
    anon_vma, i.e. once any page of the private mapping was written (mm/memory.c,
    ``vma_needs_copy``).  Writing the first byte of the header back unchanged
    gives the mapping one private page (the header, which no tensor uses) and
    that anon_vma; populating it first means children start with every weight
    page mapped: ~7 ms of PTE copying in fork instead of ~35 ms of faults."""
    import ctypes

    n = populate_mapped()
    for addr, _, _ in MAPPED:
        b = ctypes.c_ubyte.from_address(addr)
        b.value = b.value  # a write of the same value: COW of the header page only
    return n


def _view(storage: torch.UntypedStorage, s: TensorSpec) -> torch.Tensor:
    item = _itemsize(s.dtype)
    if s.nbytes == 0:
        return torch.empty(s.shape, dtype=s.dtype)
    if s.start % item:
        # Unaligned (old writers did not pad the header): a private copy is the only option.
        raw = torch.empty(0, dtype=torch.uint8).set_(storage, s.start, (s.nbytes,), (1,))
        return raw.clone().view(s.dtype).reshape(s.shape)
    stride = _contiguous_strides(s.shape)
    return torch.empty(0, dtype=s.dtype).set_(storage, s.start // item, s.shape, stride)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(strides))

"""What every partition shares, encoder or decoder: the format tag, the user-facing error,
the layer split and the atomic swap of a finished partition into place.

Kept apart so ``partitioner.py`` (BERT, and the dispatcher) and
``decoder_partition.py`` (OPT) both build on it without importing each other.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "quart-partition/1"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


class PartitionError(ValueError):
    """Bad partitioning request; the message is meant for the user."""


def split_layers(num_layers: int, num_stages: int, sizes: list[int] | None = None
                 ) -> list[tuple[int, int]]:
    """Contiguous layer ranges; balanced (earlier stages take the remainder) unless sizes given."""
    if num_stages < 1:
        raise PartitionError("--stages must be at least 1")
    if num_stages > num_layers:
        raise PartitionError(f"--stages {num_stages} is larger than the model's "
                             f"{num_layers} layers: every stage needs at least one layer")
    if sizes is None:
        base, extra = divmod(num_layers, num_stages)
        sizes = [base + (1 if i < extra else 0) for i in range(num_stages)]
    if len(sizes) != num_stages or any(s < 1 for s in sizes) or sum(sizes) != num_layers:
        raise PartitionError(f"--split {sizes} must be {num_stages} positive sizes "
                             f"summing to {num_layers}")
    ranges, start = [], 0
    for s in sizes:
        ranges.append((start, start + s))
        start += s
    return ranges


def stable_seed(seed: int, name: str) -> int:
    """A per-tensor seed from the run's seed and the tensor's name, the same on every
    machine and Python (``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory into place; an old one is removed only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_into(out: Path) -> Iterator[Path]:
    """A fresh directory beside ``out`` to write a partition into; swapped into place when the
    block ends, removed when it raises, so a failed or interrupted run never leaves a half
    partition where a stage would load it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise PartitionError(f"cannot write the partition to {out}: {e.strerror}") from e
    try:
        yield tmp
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

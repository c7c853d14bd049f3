"""replica_memory groups a process's private pages by mapping, as /proc/PID/smaps lists them."""
from __future__ import annotations

import os

from benchmark.studies import replica_memory as rm

SMAPS = """\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0 [heap]
Private_Clean:         0 kB
Private_Dirty:       132 kB
Swap:                  0 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Private_Clean:         0 kB
Private_Dirty:      1024 kB
Swap:                  8 kB
7f1000000000-7f1000200000 r--s 00000000 00:19 12 /dev/shm/quart-0-abc/stage.bin
Private_Clean:         0 kB
Private_Dirty:         0 kB
Swap:                  0 kB
7f2000000000-7f2000001000 rw-p 00012000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Private_Clean:         4 kB
Private_Dirty:         8 kB
Swap:                  0 kB
7f3000000000-7f3000001000 rw-p 00000000 00:00 0 [anon:glibc: malloc arena]
Private_Dirty:        16 kB
7f4000000000-7f4000001000 rw-p 00000000 00:00 0 [stack:123]
Private_Dirty:         4 kB
"""


def test_private_pages_grouped_by_mapping():
    got = rm.private_by_mapping(SMAPS)
    assert got["[heap]"]["Private_Dirty"] == 132 * 1024
    assert got["anonymous"] == {"Private_Dirty": 1024 * 1024, "Private_Clean": 0,
                                "Swap": 8 * 1024}
    assert "T1 segment (/dev/shm)" not in got  # nothing private in it: left out
    assert got["libc.so.6"] == {"Private_Dirty": 8192, "Private_Clean": 4096, "Swap": 0}
    assert got["[stack]"]["Private_Dirty"] == 4096
    assert got["[anon:glibc: malloc arena]"]["Private_Dirty"] == 16 * 1024
    assert rm.dirty(got) == (132 + 1024 + 8 + 8 + 16 + 4) * 1024


def test_categories():
    assert rm.category("") == "anonymous"
    assert rm.category("/dev/shm/quart-1/x") == "T1 segment (/dev/shm)"
    assert rm.category("/usr/bin/python3.11") == "python binary"
    assert rm.category("/tmp/x.so (deleted)") == "x.so"


def test_this_process_has_private_pages():
    snap = rm.snapshot(os.getpid())
    assert rm.dirty(snap) > 0 and ("[heap]" in snap or "anonymous" in snap)

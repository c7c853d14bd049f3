"""keys_manager.cache: tiers, checksums, threshold/eviction, recovery and copy-on-write mapping.

Real files and real weights: the session's 3-stage all-MiniLM-L6-v2 partition,
with T1 under a private directory in /dev/shm removed at teardown.
"""
from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from functions.stage.bert import Stage, read_manifest, sha256_file
from keys_manager.cache import CacheFull, ParamCache, StageKey, map_stage, parse_threshold
from keys_manager.segment import SegmentCorrupt, read_header

GiB = 2**30


@pytest.fixture
def shm_root():
    root = Path("/dev/shm") / f"quart-test-{uuid.uuid4().hex}"
    root.mkdir(mode=0o700)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sizes(minilm3) -> list[int]:
    return [s["file_bytes"] for s in read_manifest(minilm3)["stages"]]


def make_cache(tmp_path: Path, shm_root: Path, threshold: int = 4 * GiB) -> ParamCache:
    return ParamCache(tmp_path / "node", shm_root / "t1", threshold)


def key(k: int) -> StageKey:
    return StageKey("all-MiniLM-L6-v2", k)


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_promotion_t3_t2_t1_and_counters(tmp_path, shm_root, minilm3, sizes):
    c = make_cache(tmp_path, shm_root)
    e = c.ensure(minilm3, 1)
    assert e.tier == "T3" and e.path == shm_root / "t1" / "all-MiniLM-L6-v2--stage-1.safetensors"
    assert e.bytes == sizes[1] == e.path.stat().st_size
    assert sha256_file(e.path) == e.sha256 == read_manifest(minilm3)["stages"][1]["sha256"]
    for p in (e.path, e.disk_path, tmp_path / "node" / "index.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert c.ensure(minilm3, 1).tier == "T1"
    c.evict(key(1))
    assert c.ensure(minilm3, 1).tier == "T2"
    st = c.status()
    assert st["hits"] == {"T1": 1, "T2": 1, "T3": 1}
    assert st["misses"] == {"T1": 2, "T2": 1, "T3": 0}
    assert st["bytes"] == {"T1": sizes[1], "T2": sizes[1]}
    assert st["bytes_promoted"] == {"T1": 2 * sizes[1], "T2": sizes[1]}
    assert st["evictions"] == 1
    assert st["entries"]["all-MiniLM-L6-v2--stage-1"]["T1"] is True
    assert not [n for n in files(shm_root) + files(tmp_path / "node") if n.startswith(".tmp-")]
    c.close()


def test_corrupt_t1_refetched_from_t2_truncated_t2_from_t3(tmp_path, shm_root, minilm3):
    c = make_cache(tmp_path, shm_root)
    e = c.ensure(minilm3, 2)
    with open(e.path, "r+b") as f:  # flip one byte in the middle of the weights
        f.seek(e.bytes // 2)
        b = f.read(1)
        f.seek(e.bytes // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert sha256_file(e.path) != e.sha256
    assert c.ensure(minilm3, 2).tier == "T2"
    assert sha256_file(e.path) == e.sha256
    c.evict(key(2))
    os.truncate(e.disk_path, e.bytes - 100)
    assert c.ensure(minilm3, 2).tier == "T3"
    assert sha256_file(e.disk_path) == sha256_file(e.path) == e.sha256
    assert c.status()["corruptions"] == 2
    c.close()


def test_corrupt_origin_is_refused(tmp_path, shm_root, minilm3):
    origin = tmp_path / "origin"
    shutil.copytree(minilm3, origin)
    with open(origin / "stage-1.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\xde\xad\xbe\xef")
    c = make_cache(tmp_path, shm_root)
    with pytest.raises(SegmentCorrupt, match="origin"):
        c.ensure(origin, 1)
    assert files(shm_root) == [] and files(tmp_path / "node") == ["index.json"]
    c.close()


@pytest.mark.parametrize("model, stage", [
    ("../etc", 0), ("a/b", 0), ("..", 0), (".hidden", 0), ("", 0), ("x..y", 0),
    ("a" * 129, 0), ("ok\n", 0), ("ok", -1), ("ok", True), ("ok", "1"), (None, 0),
])
def test_stage_key_rejects_traversal(model, stage):
    with pytest.raises(ValueError):
        StageKey(model, stage)


def test_stage_key_file_names(tmp_path, shm_root, minilm3):
    assert StageKey("m-1.v2_x", 3).filename == "m-1.v2_x--stage-3.safetensors"
    assert StageKey.from_filename("m--stage-3.safetensors") == StageKey("m", 3)
    for bad in ("m--stage-03.safetensors", "..--stage-1.safetensors", "m--stage-1.bin", "x"):
        assert StageKey.from_filename(bad) is None
    c = make_cache(tmp_path, shm_root)
    with pytest.raises(ValueError):
        c.ensure(minilm3, 0, model="../../escape")
    with pytest.raises(ValueError):
        c.ensure(minilm3, 3)
    c.close()


@pytest.mark.parametrize("value, expected", [
    ("300000000", 300_000_000),
    ("512Mi", 536_870_912),
    ("2G", 2_000_000_000),
    ("1Gi", 1_073_741_824),
    ("1.5Gi", 1_610_612_736),
    ("64k", 64_000),
    ("2GB", 2_000_000_000),
    ("0.65", 10_400_000_000),  # 0.65 * 16e9
    ("65%", 10_400_000_000),
    ("1.0", 16_000_000_000),
    (" 100Ki ", 102_400),
])
def test_parse_threshold(value, expected):
    assert parse_threshold(value, 16_000_000_000) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "0", "1.5", "0.0", "10Xi", "150%", "1e9"])
def test_parse_threshold_rejects(value):
    with pytest.raises(ValueError):
        parse_threshold(value, 16_000_000_000)


def test_lru_eviction_respects_threshold_and_pins(tmp_path, shm_root, minilm3, sizes):
    threshold = sizes[0] + sizes[1] + 100  # room for stage 0 and one small stage
    c = make_cache(tmp_path, shm_root, threshold)
    c.ensure(minilm3, 0)
    c.ensure(minilm3, 1)
    assert c.ensure(minilm3, 0).tier == "T1"  # stage 0 is now the most recently used
    c.ensure(minilm3, 2)  # evicts the LRU: stage 1
    assert files(shm_root / "t1") == [key(0).filename, key(2).filename]
    assert c.status()["bytes"]["T1"] <= threshold
    c.pin(key(2))
    assert c.ensure(minilm3, 1).tier == "T2"  # LRU is 2 but pinned: stage 0 goes
    assert files(shm_root / "t1") == [key(1).filename, key(2).filename]
    assert c.status()["evictions"] == 2
    with pytest.raises(ValueError, match="pinned"):
        c.evict(key(2))
    c.unpin(key(2))
    with pytest.raises(ValueError):
        c.unpin(key(2))
    c.close()


def test_cache_full_when_everything_pinned(tmp_path, shm_root, minilm3, sizes):
    c = make_cache(tmp_path, shm_root, sizes[0] + sizes[1] + 100)
    c.ensure(minilm3, 1)
    c.ensure(minilm3, 2)
    c.pin(key(1))
    c.pin(key(1))
    c.pin(key(2))
    c.unpin(key(1))  # counted: still pinned once
    before = {n: sha256_file(shm_root / "t1" / n) for n in files(shm_root / "t1")}
    with pytest.raises(CacheFull, match="pinned stages: .*stage-1.*stage-2"):
        c.ensure(minilm3, 0)
    assert {n: sha256_file(shm_root / "t1" / n) for n in files(shm_root / "t1")} == before
    assert c.status()["evictions"] == 0 and c.status()["pinned"] == {
        str(key(1)): 1, str(key(2)): 1}
    small = make_cache(tmp_path / "small", shm_root / "small", sizes[0] - 1)
    with pytest.raises(CacheFull, match="threshold"):
        small.ensure(minilm3, 0)
    assert files(shm_root / "small") == []
    small.close()
    c.close()


def test_recover_after_crash(tmp_path, shm_root, minilm3, sizes):
    c = make_cache(tmp_path, shm_root)
    for k in (0, 1, 2):
        c.ensure(minilm3, k)
    node, t1 = tmp_path / "node", shm_root / "t1"
    del c  # crash: no close()
    (t1 / ".tmp-abc123").write_bytes(b"half a segment")
    (t1 / "stray.bin").write_bytes(b"x")
    (node / ".tmp-zz").write_bytes(b"y")
    (node / "junk.txt").write_text("z")
    (node / "other--stage-0.safetensors").write_bytes(b"not in the index")
    os.truncate(t1 / key(2).filename, 10)  # wrong size: dropped, refetched from T2
    c2 = make_cache(tmp_path, shm_root)
    assert files(t1) == [key(0).filename, key(1).filename]
    assert files(node) == sorted([key(0).filename, key(1).filename, key(2).filename,
                                  "index.json"])
    assert c2.status()["bytes"] == {"T1": sizes[0] + sizes[1], "T2": sum(sizes)}
    assert c2.recover()["removed"] == []
    assert c2.ensure(minilm3, 1).tier == "T1"
    assert c2.ensure(minilm3, 2).tier == "T2"
    c2.close()
    assert files(shm_root) == []


def test_close_leaves_no_shm_files(tmp_path, shm_root, minilm3):
    c = make_cache(tmp_path, shm_root)
    c.ensure(minilm3, 1)
    c.close()
    assert files(shm_root) == [] and not (shm_root / "t1").exists()
    assert files(tmp_path / "node") == sorted([key(1).filename, "index.json"])


def test_map_stage_equals_load_file(minilm3):
    for k in range(3):
        path = minilm3 / f"stage-{k}.safetensors"
        mapped, ref = map_stage(path), load_file(str(path))
        assert mapped.keys() == ref.keys()
        for name, t in ref.items():
            assert mapped[name].dtype == t.dtype and torch.equal(mapped[name], t), name


def test_map_stage_dtypes(tmp_path):
    from safetensors.torch import save_file

    ts = {"f32": torch.randn(3, 5), "f16": torch.randn(7).half(),
          "bf16": torch.randn(2, 3).bfloat16(),
          "i64": torch.arange(-4, 9), "i32": torch.arange(6, dtype=torch.int32).view(2, 3),
          "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.5)}
    save_file(ts, str(tmp_path / "d.safetensors"))
    m = map_stage(tmp_path / "d.safetensors")
    for name, t in ts.items():
        assert m[name].dtype == t.dtype and m[name].shape == t.shape and torch.equal(m[name], t)


def _write_raw(path: Path, header: bytes, data: bytes) -> Path:
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize("header, data", [
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 4),  # past EOF
    (b'{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', b"\0" * 8),  # size
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},'
     b' "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}', b"\0" * 12),  # overlap
    (b'{"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8),
    (b'{"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', b"\0" * 8),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}', b"\0" * 8),
    (b'{"a": [1, 2]}', b""),
    (b'[1, 2]', b""),
    (b'{not json', b""),
])
def test_map_stage_rejects_malformed(tmp_path, header, data):
    with pytest.raises(ValueError):
        map_stage(_write_raw(tmp_path / "bad.safetensors", header, data))


def test_map_stage_rejects_huge_header_length(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError):
        read_header(p)
    (tmp_path / "short.safetensors").write_bytes(b"\1\0")
    with pytest.raises(ValueError):
        map_stage(tmp_path / "short.safetensors")


def test_map_stage_is_copy_on_write(tmp_path, shm_root, minilm3):
    c = make_cache(tmp_path, shm_root)
    e = c.ensure(minilm3, 1)
    first, second = map_stage(e.path), map_stage(e.path)
    name = "encoder.layer.2.attention.self.query.weight"
    original = load_file(str(e.path))[name]
    first[name].add_(1.0)
    first[name][0, 0] = 12345.0
    assert first[name][0, 0].item() == 12345.0
    assert torch.equal(second[name], original)
    assert torch.equal(map_stage(e.path)[name], original)
    assert sha256_file(e.path) == e.sha256
    c.close()


def test_stage_from_mapped_segment_equals_stage_load(tmp_path, shm_root, minilm3):
    c = make_cache(tmp_path, shm_root)
    manifest = read_manifest(minilm3)
    ref0, ref1 = Stage.load(minilm3, 0), Stage.load(minilm3, 1)
    s0 = Stage(manifest, 0, map_stage(c.ensure(minilm3, 0).path), minilm3)
    s1 = Stage(manifest, 1, map_stage(c.ensure(minilm3, 1).path), minilm3)
    ids, mask = ref0.tokenize(["The quick brown fox.", "Pipelines mapped copy-on-write."])
    h_ref = ref0.forward(ids, mask)
    h = s0.forward(ids, mask)
    assert torch.equal(h, h_ref)
    assert torch.equal(s1.forward(h, mask), ref1.forward(h_ref, mask))
    c.close()


def test_map_stage_tensors_live_in_a_private_file_mapping(minilm3):
    """The views point into a MAP_PRIVATE mapping of the file, not into anonymous memory."""
    path = (minilm3 / "stage-2.safetensors").resolve()
    mapped = map_stage(path)
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
    regions = [(int(r[0].split("-")[0], 16), int(r[0].split("-")[1], 16), r[1])
               for r in maps if len(r) >= 6 and r[5] == str(path)]
    for t in mapped.values():
        ptr = t.data_ptr()
        assert any(lo <= ptr < hi and perms.endswith("p") for lo, hi, perms in regions)


def test_same_key_other_content_is_replaced(tmp_path, shm_root, minilm3):
    """Two partitions of one model share key names: a sha256 change means the copy is stale."""
    import json

    other = tmp_path / "other"
    shutil.copytree(minilm3, other)
    shutil.copy(minilm3 / "stage-2.safetensors", other / "stage-1.safetensors")
    manifest = read_manifest(minilm3)
    s1, s2 = manifest["stages"][1], manifest["stages"][2]
    s1.update(sha256=s2["sha256"], file_bytes=s2["file_bytes"])
    (other / "manifest.json").write_text(json.dumps(manifest))
    c = make_cache(tmp_path, shm_root)
    c.ensure(minilm3, 1)
    e = c.ensure(other, 1)
    assert e.tier == "T3" and sha256_file(e.path) == s2["sha256"]
    assert c.status()["entries"][str(key(1))]["origin"] == str(other / "stage-1.safetensors")
    c.close()

"""contracts/: the formats several packages share, read the same way by all of them."""
from __future__ import annotations

import pytest

from contracts import server_timing

# --------------------------------------------------------------------------- Server-Timing


@pytest.mark.parametrize("header, expected", [
    # a 3-stage pipeline: each stage first, then its downstream's
    ("stage0;dur=12.30, stage1;dur=11.80, stage2;dur=12.05",
     [("stage0", 0.0123), ("stage1", 0.0118), ("stage2", 0.01205)]),
    # W3C allows other parameters and quoted values; dur is case-insensitive
    ('db;desc="x";dur="7", cache;DUR=1', [("db", 0.007), ("cache", 0.001)]),
    # metrics without a valid dur are skipped, the rest kept in order
    ("a;desc=hit, b;dur=abc, c;dur=-1, d;dur=2", [("d", 0.002)]),
    ("", []), (None, []), (";dur=3", []),
])
def test_parse_every_stage(header, expected):
    got = server_timing.parse(header)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected])


def test_first_is_the_replicas_own_time_never_a_downstream_one():
    assert server_timing.first_seconds("stage1;dur=12.5, stage2;dur=3") == pytest.approx(0.0125)
    # the first metric has no dur: None, not stage2's time
    assert server_timing.first_seconds("cache;desc=hit, stage2;dur=3") is None
    assert server_timing.first_seconds("a;dur=1e12") is None  # a broken clock


def test_what_the_writers_write_parses_back():
    from functions.stage.decoder_server import _timing_header

    own = server_timing.entry("stage0", 0.0123)
    assert own == "stage0;dur=12.30"  # the form functions/stage/server.py writes
    header = server_timing.join(own, "stage1;dur=3.00, stage2;dur=1.50")
    assert server_timing.parse(header) == [
        ("stage0", pytest.approx(0.0123)), ("stage1", 0.003), ("stage2", 0.0015)]
    assert server_timing.total_seconds(header) == pytest.approx(0.0168)
    assert server_timing.join(own, None) == own
    decoder = _timing_header({"stage0": 4.25, "stage1": 2.0})  # the decoder stages' writer
    assert server_timing.parse(decoder) == [("stage0", 0.00425), ("stage1", 0.002)]


# --------------------------------------------------------------------------- CPU quantities


@pytest.mark.parametrize("cpus", [0.001, 0.25, 1.0, 1.5, 3.999])
def test_cpu_the_plugin_writes_is_the_cpu_the_provider_enforces(cpus):
    from contracts.quantity import format_cpu, parse_cpu
    from gateway_plugin.actuate import _cpu

    text = format_cpu(cpus)
    assert text.endswith("m") and parse_cpu(text) == pytest.approx(cpus)
    assert _cpu({"cpu": text}) == pytest.approx(cpus)  # what the plugin reads back


def test_one_cpu_parser():
    import gateway_plugin.actuate
    import local_provider.cpulimit
    import local_provider.types
    from contracts import quantity

    for mod in (gateway_plugin.actuate, local_provider.cpulimit, local_provider.types):
        assert mod.parse_cpu is quantity.parse_cpu, mod.__name__


# --------------------------------------------------------------------------- partition manifest


def test_the_handler_folders_manifest_reader_agrees(tmp_path):
    import json

    from contracts import manifest
    from functions.stage import bert

    assert bert.MANIFEST == manifest.MANIFEST
    assert not manifest.has_manifest(tmp_path)
    for read in (manifest.read_manifest, bert.read_manifest):
        with pytest.raises(FileNotFoundError, match="quart-faas partition"):
            read(tmp_path)
    doc = {"model": "m", "num_stages": 1, "stages": [{"file_bytes": 3}]}
    (tmp_path / manifest.MANIFEST).write_text(json.dumps(doc))
    assert manifest.has_manifest(tmp_path)
    assert manifest.read_manifest(tmp_path) == bert.read_manifest(tmp_path) == doc

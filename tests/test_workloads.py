"""benchmark.workloads: seeded open-loop arrivals, the file format, CLI (Azure trace replay:
test_workloads_azure.py)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.workloads import (
    CV_SWEEP,
    Arrivals,
    gamma,
    merge,
    poisson,
    ramp,
    read_minute_counts,
    step,
)
from benchmark.workloads.arrivals import MAGIC
from benchmark.workloads.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "benchmark" / "workloads" / "samples"
MINUTES_CSV = SAMPLES / "invocations_per_function_md.anon.synthetic.csv"
INVOCATIONS_TXT = SAMPLES / "AzureFunctionsInvocationTrace.synthetic.txt"


def gap_cv(t: np.ndarray) -> float:
    g = np.diff(t)
    return float(g.std() / g.mean())


# --- stationary processes ----------------------------------------------------------------

@pytest.mark.parametrize("cv", CV_SWEEP)
def test_gamma_hits_rate_and_cv_across_the_sweep(cv):
    # 100/s for 4000 s: ~400k gaps.  Sampling error of the count is sqrt(n)*cv/n (1.3% at
    # cv 8) and of the CV about 0.5*sqrt((6*cv^2 + 2)/n) (1.5% at cv 8), so 5% / 7% bands
    # hold with margin; a wrong shape (k = 1/cv instead of 1/cv^2) misses them by far.
    a = gamma(100.0, cv, 4000.0, seed=7)
    assert a.summary()["rate_per_s"] == pytest.approx(100.0, rel=0.05)
    assert gap_cv(a.times_s) == pytest.approx(cv, rel=0.07)
    assert a.times_s.dtype == np.float64 and a.target.dtype == np.int32
    assert a.times_s[0] >= 0 and a.times_s[-1] < 4000.0
    assert np.all(np.diff(a.times_s) >= 0)


def test_poisson_rate_cv_and_dispersion():
    a = poisson(20.0, 5000.0, seed=3)
    assert len(a) / 5000.0 == pytest.approx(20.0, rel=0.02)
    assert a.summary()["cv"] == pytest.approx(1.0, rel=0.03)
    # counts in 1 s windows: Poisson means variance == mean (index of dispersion 1)
    counts = np.bincount(a.times_s.astype(int), minlength=5000)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.08)
    assert a.meta["kind"] == "poisson" and a.meta["seed"] == 3


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a, b, c = gamma(5, 8, 300, seed=1), gamma(5, 8, 300, seed=1), gamma(5, 8, 300, seed=2)
    assert a.to_bytes() == b.to_bytes() and a.sha256() == b.sha256() and a == b
    assert a.sha256() != c.sha256() and a != c
    assert gamma(5, 4, 300, seed=1).sha256() != a.sha256()          # parameters matter too
    h1, h2 = a.save(tmp_path / "a.arr"), b.save(tmp_path / "b.arr")
    data = (tmp_path / "a.arr").read_bytes()
    assert h1 == h2 == a.sha256() == hashlib.sha256(data).hexdigest()
    assert data == (tmp_path / "b.arr").read_bytes()


def test_save_load_round_trip(tmp_path):
    a = merge(gamma(3, 2, 120, seed=1, target="bert"), step([(0, 1), (60, 4)], 120, cv=4,
                                                             seed=2, target="minilm"))
    h = a.save(tmp_path / "w.arr")
    b = Arrivals.load(tmp_path / "w.arr")
    assert b == a and b.sha256() == h
    assert b.targets == ("bert", "minilm") and b.meta == a.meta
    assert b.duration_s == 120.0
    np.testing.assert_array_equal(b.for_target("minilm"), a.for_target("minilm"))
    assert not b.times_s.flags.writeable                 # frozen means frozen
    with pytest.raises(KeyError, match="unknown target 'nope'"):
        b.for_target("nope")


def test_merge_keeps_each_part_and_unifies_names():
    x, y = gamma(4, 1, 50, seed=1, target="a"), poisson(2, 80, seed=2, target="b")
    m = merge(x, y)
    assert len(m) == len(x) + len(y) and m.duration_s == 80
    np.testing.assert_array_equal(m.for_target("a"), x.times_s)
    np.testing.assert_array_equal(m.for_target("b"), y.times_s)
    assert np.all(np.diff(m.times_s) >= 0)
    same = merge(x, gamma(4, 1, 50, seed=9, target="a"))
    assert same.targets == ("a",) and len(same) == len(x) + len(gamma(4, 1, 50, seed=9))
    s = m.summary()
    assert s["targets"]["a"]["n"] == len(x)
    assert s["targets"]["b"]["cv"] == pytest.approx(gap_cv(y.times_s))


def test_truncate_keeps_a_prefix():
    a = gamma(10, 2, 100, seed=4)
    t = a.truncate(30)
    assert t.duration_s == 30 and np.array_equal(t.times_s, a.times_s[a.times_s < 30])


# --- time-varying rates ------------------------------------------------------------------

def inside(t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return t[(t >= lo) & (t < hi)]


@pytest.mark.parametrize("cv", [0.1, 4.0])
def test_step_follows_levels_and_keeps_cv(cv):
    levels = [(0, 20), (1000, 100), (2000, 0), (2500, 50)]
    a = step(levels, 3500, cv=cv, seed=5)
    ends = [1000, 2000, 2500, 3500]
    for (t0, rate), t1 in zip(levels, ends, strict=True):
        seg = inside(a.times_s, t0, t1)
        # expected count rate*(t1 - t0); sampling sd sqrt(n)*cv is <= 3% of it at cv 4
        assert len(seg) == pytest.approx(rate * (t1 - t0), rel=0.1, abs=0)
        if rate:
            assert gap_cv(seg) == pytest.approx(cv, rel=0.1)
    assert len(inside(a.times_s, 2000, 2500)) == 0          # the idle level is idle
    assert a.meta["parameters"]["levels"] == [[0.0, 20.0], [1000.0, 100.0], [2000.0, 0.0],
                                              [2500.0, 50.0]]


def test_ramp_follows_the_cumulative_rate_and_keeps_cv():
    # 0 -> 200/s over 1000 s: Lambda(t) = 0.1 t^2, so quarters hold 6250, 18750, 31250, 43750
    a = ramp(0, 200, 1000, cv=2.0, seed=6)
    quarters = np.histogram(a.times_s, bins=[0, 250, 500, 750, 1000])[0]
    np.testing.assert_allclose(quarters, [6250, 18750, 31250, 43750], rtol=0.08)
    # in operational time tau = Lambda(t) the gaps are the unit-mean gamma renewal again
    tau = 0.1 * a.times_s ** 2
    g = np.diff(tau)
    assert g.mean() == pytest.approx(1.0, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(2.0, rel=0.05)
    down = ramp(100, 0, 100, seed=1)
    first, second = np.histogram(down.times_s, bins=[0, 50, 100])[0]
    assert first > 2 * second          # 3750 vs 1250 expected


# --- validation --------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: gamma(0, 1, 10), "rate_per_s must be a positive number"),
    (lambda: gamma(1, -1, 10), "cv must be a positive number"),
    (lambda: poisson(1, float("nan")), "duration_s must be a positive number"),
    (lambda: gamma(1, 1, 10, seed=-1), "seed must be a non-negative integer"),
    (lambda: gamma(1e9, 1, 1e6), "more than 50,000,000"),
    (lambda: step([(5, 1)], 10), "first level must start at 0"),
    (lambda: step([(0, 1), (0, 2)], 10), "increase strictly"),
    (lambda: step([(0, 1), (20, 2)], 10), "at or after duration_s"),
    (lambda: step([(0, 0)], 10), "all level rates are 0"),
    (lambda: step([(0, -1)], 10), "finite and >= 0"),
    (lambda: step(["x"], 10), "pairs"),
    (lambda: ramp(0, 0, 10), "not both 0"),
    (lambda: Arrivals([2.0, 1.0], [0, 0], ("p",), {"duration_s": 5}), "sorted ascending"),
    (lambda: Arrivals([-1.0], [0], ("p",), {"duration_s": 5}), ">= 0"),
    (lambda: Arrivals([1.0], [0, 0], ("p",), {"duration_s": 5}), "has 1 entries"),
    (lambda: Arrivals([1.0], [1], ("p",), {"duration_s": 5}), "out of range"),
    (lambda: Arrivals([9.0], [0], ("p",), {"duration_s": 5}), "after duration_s"),
    (lambda: Arrivals([1.0], [0], ("p", "p"), {"duration_s": 5}), "unique"),
    (lambda: Arrivals([1.0], [0], ("p",), {}), "duration_s"),
    (lambda: Arrivals([1.0], [0], ("p",), {"duration_s": 5, "x": object()}), "JSON-able"),
    (lambda: merge(), "at least one"),
])
def test_bad_arguments_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def corrupt(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "bad.arr"
    p.write_bytes(data)
    return p


def with_header(data: bytes, **changes) -> bytes:
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC):end])
    header.update(changes)
    return MAGIC + json.dumps(header).encode() + data[end:]


def test_load_rejects_damaged_files(tmp_path):
    good = gamma(2, 1, 20, seed=1).to_bytes()
    n = json.loads(good[len(MAGIC):good.index(b"\n", len(MAGIC))])["n"]
    cases = [
        (b"hello\n", "not an arrivals file"),
        (MAGIC + b"{not json\n", "header is not valid JSON"),
        (MAGIC + b'{"a": 1}', "header line is not terminated"),
        (good[:-3], "file truncated or padded"),
        (good + b"\0", "file truncated or padded"),
        (with_header(good, version=99), "format version 99"),
        (with_header(good, n=-1), "'n' must be a non-negative integer"),
        (with_header(good, targets=[]), "targets must be a non-empty"),
        (with_header(good, meta={"duration_s": 1}), "after duration_s"),
    ]
    # a payload whose times are out of order: swap the first two float64s
    t = np.frombuffer(good[len(good) - n * 12:len(good) - n * 4], dtype="<f8").copy()
    t[[0, 1]] = t[[1, 0]]
    cases.append((good[:len(good) - n * 12] + t.tobytes() + good[len(good) - n * 4:],
                  "sorted ascending"))
    for data, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            Arrivals.load(corrupt(tmp_path, data))
        assert "bad.arr" in str(e.value)
    with pytest.raises(ValueError, match="cannot read arrivals file"):
        Arrivals.load(tmp_path / "missing.arr")


# --- CLI ---------------------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.workloads", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_generate_and_show(tmp_path):
    out = tmp_path / "g.arr"
    r = run_cli("generate", "--kind", "gamma", "--rps", "5", "--cv", "8", "--duration", "300",
                "--seed", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    a = Arrivals.load(out)
    assert a == gamma(5, 8, 300, seed=1)
    assert f"sha256 {sha}" in r.stdout and f"n {len(a)} " in r.stdout
    assert f"cv {gap_cv(a.times_s):.3f}" in r.stdout
    s = run_cli("show", str(out), "--json")
    assert s.returncode == 0, s.stderr
    shown = json.loads(s.stdout)
    assert shown["sha256"] == sha and shown["n"] == len(a) and shown["meta"]["seed"] == 1
    bad = run_cli("generate", "--kind", "gamma", "--rps", "5", "--duration", "3", "--out",
                  str(tmp_path / "x"))
    assert bad.returncode == 2 and "--kind gamma needs --cv" in bad.stderr


def test_cli_other_kinds_in_process(tmp_path, capsys):
    cases = [
        ["--kind", "poisson", "--rps", "3", "--duration", "60"],
        ["--kind", "step", "--levels", "0:2,30:10", "--duration", "60", "--cv", "2"],
        ["--kind", "ramp", "--rps-from", "1", "--rps-to", "9", "--duration", "60"],
        ["--kind", "azure", "--trace", str(MINUTES_CSV), "--top", "3", "--minutes", "0:10",
         "--spacing", "gamma", "--cv", "4", "--time-scale", "0.5"],
        ["--kind", "azure", "--trace", str(INVOCATIONS_TXT), "--targets",
         "a,b,c,d,e,f"],
        ["--kind", "synthetic-azure", "--functions", "50", "--length-min", "5",
         "--trace-out", str(tmp_path / "syn.csv")],
    ]
    for i, flags in enumerate(cases):
        out = tmp_path / f"{i}.arr"
        assert cli_main(["generate", *flags, "--out", str(out)]) == 0, flags
        printed = capsys.readouterr().out
        assert f"sha256 {Arrivals.load(out).sha256()}" in printed
    assert read_minute_counts(tmp_path / "syn.csv").counts.shape == (50, 5)


@pytest.mark.parametrize("flags, message", [
    (["--kind", "gamma", "--rps", "5", "--cv", "2", "--duration", "9", "--levels", "0:1"],
     "--kind gamma does not take --levels"),
    (["--kind", "step", "--levels", "0-5", "--duration", "9"], "t_start:rate pairs"),
    (["--kind", "ramp", "--rps-from", "1", "--duration", "9"], "needs --rps-to"),
    (["--kind", "azure", "--trace", "x.csv", "--cv", "4"], "add --spacing gamma"),
    (["--kind", "azure", "--trace", "x.csv", "--minutes", "5"], "minute range START:STOP"),
    (["--kind", "weird"], "invalid choice"),
])
def test_cli_bad_flags_exit_2_with_the_flag_named(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        cli_main(["generate", *flags, "--out", str(tmp_path / "x.arr")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bad_values_and_files_are_errors_not_tracebacks(tmp_path, capsys):
    assert cli_main(["generate", "--kind", "poisson", "--rps", "-1", "--duration", "9",
                     "--out", str(tmp_path / "x.arr")]) == 2
    assert "error: rate_per_s must be a positive number" in capsys.readouterr().err
    (tmp_path / "junk").write_bytes(b"junk")
    assert cli_main(["show", str(tmp_path / "junk")]) == 2
    assert "not an arrivals file" in capsys.readouterr().err
    assert cli_main(["generate", "--kind", "azure", "--trace", str(tmp_path / "none.csv"),
                     "--out", str(tmp_path / "y.arr")]) == 2
    assert "cannot read trace" in capsys.readouterr().err

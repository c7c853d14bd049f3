"""benchmark.workloads: Azure Functions trace replay (2019 minute counts, 2021 invocations),
the synthetic traces and the shipped samples."""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from benchmark.workloads import (
    load_azure,
    read_invocations,
    read_minute_counts,
    synthetic_azure,
    write_samples,
)
from benchmark.workloads.azure import SPACINGS
from tests.test_workloads import INVOCATIONS_TXT, MINUTES_CSV, SAMPLES, gap_cv

# --- Azure traces ------------------------------------------------------------------------

def file_counts() -> tuple[list[list[str]], np.ndarray]:
    """The sample's rows read with the csv module alone (independent of the loader)."""
    with MINUTES_CSV.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return rows, np.array([[int(v) for v in r[4:]] for r in rows])


@pytest.mark.parametrize("spacing", SPACINGS)
def test_minute_counts_reproduce_the_file_exactly(spacing):
    rows, counts = file_counts()
    a = read_minute_counts(MINUTES_CSV).to_arrivals(spacing=spacing, cv=4.0, seed=11)
    assert a.duration_s == 60.0 * counts.shape[1] and len(a) == counts.sum()
    for r, want in zip(rows, counts, strict=True):
        name = f"{r[1][:8]}-{r[2][:8]}"
        got = np.histogram(a.for_target(name), bins=np.arange(counts.shape[1] + 1) * 60.0)[0]
        np.testing.assert_array_equal(got, want)


def test_minute_counts_window_top_n_and_time_scale():
    rows, counts = file_counts()
    scale = 0.25
    a = read_minute_counts(MINUTES_CSV).to_arrivals(top_n=3, minute_range=(5, 20),
                                                    time_scale=scale, seed=2)
    window = counts[:, 5:20]
    top = np.argsort(-window.sum(axis=1), kind="stable")[:3]
    assert len(a.targets) == 3 and a.duration_s == 15 * 60 * scale
    for name, i in zip(a.targets, top, strict=True):
        assert name == f"{rows[i][1][:8]}-{rows[i][2][:8]}"
        got = np.histogram(a.for_target(name), bins=np.arange(16) * 60.0 * scale)[0]
        np.testing.assert_array_equal(got, window[i])
    assert a.meta["parameters"]["minute_range"] == [5, 20]


def test_minute_spreading_is_seeded_and_spacing_changes_burstiness():
    tr = read_minute_counts(MINUTES_CSV)
    assert tr.to_arrivals(seed=1) == tr.to_arrivals(seed=1)
    assert tr.to_arrivals(seed=1) != tr.to_arrivals(seed=2)
    # even spacing is the least bursty reading of the same counts; gamma cv 8 the most
    busiest = tr.to_arrivals(top_n=1, spacing="even").times_s
    bursty = tr.to_arrivals(top_n=1, spacing="gamma", cv=8.0, seed=3).times_s
    assert gap_cv(bursty) > 2 * gap_cv(busiest)


def test_invocations_2021_start_is_end_minus_duration():
    with INVOCATIONS_TXT.open(newline="") as f:
        rows = list(csv.DictReader(f))
    starts = np.sort([float(r["end_timestamp"]) - float(r["duration"]) for r in rows])
    a = load_azure(INVOCATIONS_TXT)
    assert a.meta["kind"] == "azure-invocations" and len(a.targets) == len(
        {(r["app"], r["func"]) for r in rows})
    np.testing.assert_array_equal(a.times_s, starts)
    one = rows[0]
    mine = sorted(float(r["end_timestamp"]) - float(r["duration"]) for r in rows
                  if (r["app"], r["func"]) == (one["app"], one["func"]))
    np.testing.assert_array_equal(a.for_target(f"{one['app'][:8]}-{one['func'][:8]}"), mine)
    # a window shifts times to its start and keeps only what started inside it
    w = read_invocations(INVOCATIONS_TXT).to_arrivals(minute_range=(2, 5), time_scale=2.0)
    inwin = starts[(starts >= 120) & (starts < 300)]
    np.testing.assert_allclose(w.times_s, (inwin - 120) * 2.0)
    assert w.duration_s == 360.0


def test_target_names_list_mapping_and_errors():
    tr = read_minute_counts(MINUTES_CSV)
    a = tr.to_arrivals(top_n=4, target_names=["a", "b", "a", "c"])
    b = tr.to_arrivals(top_n=4)
    assert a.targets == ("a", "b", "c") and len(a) == len(b)
    assert len(a.for_target("a")) == len(b.for_target(b.targets[0])) + len(
        b.for_target(b.targets[2]))
    key = f"{tr.apps[0]}/{tr.functions[0]}"
    m = tr.to_arrivals(target_names={key: "pipe", tr.functions[1]: "pipe2"})
    assert set(m.targets) == {"pipe", "pipe2"}
    assert len(m.for_target("pipe")) == tr.counts[0].sum()
    with pytest.raises(ValueError, match="not a function of the trace"):
        tr.to_arrivals(target_names={"nope": "x"})
    with pytest.raises(ValueError, match="lists 2 names for 4 selected"):
        tr.to_arrivals(top_n=4, target_names=["a", "b"])
    with pytest.raises(TypeError, match="not one string"):
        tr.to_arrivals(target_names="abc")
    with pytest.raises(ValueError, match="minute_range"):
        tr.to_arrivals(minute_range=(10, 99))
    with pytest.raises(ValueError, match="this per-invocation trace has exact times"):
        load_azure(INVOCATIONS_TXT, spacing="gamma", cv=4.0)
    with pytest.raises(ValueError, match="spacing must be one of"):
        tr.to_arrivals(spacing="lumpy")
    with pytest.raises(ValueError, match="time_scale"):
        tr.to_arrivals(time_scale=0)


HEAD = "HashOwner,HashApp,HashFunction,Trigger,1,2,3"


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("HashOwner,HashApps,HashFunction,Trigger,1\n",
     "line 1: column 2 of the header must be 'HashApp'"),
    ("HashOwner,HashApp,HashFunction,Trigger\n", "no minute columns"),
    ("HashOwner,HashApp,HashFunction,Trigger,1,3\n", "column 6 of the header must be minute '2'"),
    (HEAD + "\n", "no function rows"),
    (HEAD + "\no,a,f,http,1,2\n", "line 2: expected 7 fields, got 6"),
    (HEAD + "\no,a,f,http,1,2,3\no,a,g,http,1,x,3\n",
     r"line 3: column 6 \(minute 2\) must be a non-negative integer count, got 'x'"),
    (HEAD + "\no,a,f,http,1,-2,3\n", "line 2: column 6 \\(minute 2\\)"),
    (HEAD + "\no,a,f,http,1,2.5,3\n", "got '2.5'"),
    (HEAD + "\no,a,,http,1,2,3\n", "line 2: column 3 \\(HashFunction\\) is empty"),
])
def test_malformed_minute_files(tmp_path, text, message):
    p = tmp_path / "d01.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        read_minute_counts(p)
    assert "d01.csv" in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("app,func,end,duration\n", "line 1: header must be 'app,func,end_timestamp,duration'"),
    ("app,func,end_timestamp,duration\n", "no invocation rows"),
    ("app,func,end_timestamp,duration\na,f,1.5,0.1\na,f,abc,0.1\n",
     "line 3: column 3 \\(end_timestamp\\) must be a number of seconds, got 'abc'"),
    ("app,func,end_timestamp,duration\na,f,1.5,-0.1\n",
     r"line 2: column 4 \(duration\) must be >= 0"),
    ("app,func,end_timestamp,duration\na,f,1.5,nan\n", "line 2: column 4 \\(duration\\)"),
    ("app,func,end_timestamp,duration\na,f,1.5\n", "line 2: expected 4 fields, got 3"),
    ("app,func,end_timestamp,duration\n,f,1.5,0.1\n", "line 2: column 1 \\(app\\) is empty"),
])
def test_malformed_invocation_files(tmp_path, text, message):
    p = tmp_path / "inv.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_invocations(p)


def test_load_azure_refuses_unknown_files(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("time,count\n1,2\n")
    with pytest.raises(ValueError, match="line 1: not an Azure Functions trace header"):
        load_azure(p)
    with pytest.raises(ValueError, match="cannot read trace"):
        load_azure(tmp_path / "missing.csv")


# --- synthetic traces and samples --------------------------------------------------------

def test_synthetic_azure_at_simulator_scale(tmp_path):
    tr = synthetic_azure(1000, 60, seed=3, out=tmp_path / "t.csv")
    assert tr.counts.shape == (1000, 60)
    vol = np.sort(tr.counts.sum(axis=1))[::-1]
    assert vol[:100].sum() > 0.5 * vol.sum()           # heavy tail: top 10% carry most
    assert (vol == 0).sum() >= 1 and vol[0] > 100 * max(np.median(vol), 1)
    timers = np.array(tr.triggers) == "timer"
    assert timers.any() and tr.counts[timers].max() <= 1
    # bursty minutes: per-minute counts of busy functions are over-dispersed vs Poisson
    busy = tr.counts[tr.counts.mean(axis=1) > 20]
    assert np.median(busy.var(axis=1) / busy.mean(axis=1)) > 2
    back = read_minute_counts(tmp_path / "t.csv")
    np.testing.assert_array_equal(back.counts, tr.counts)
    assert back.functions == tr.functions and back.source_sha256 == tr.source_sha256
    a = tr.to_arrivals()
    assert len(a) == tr.counts.sum() and a.duration_s == 3600.0
    assert np.array_equal(synthetic_azure(1000, 60, seed=3).counts, tr.counts)
    assert not np.array_equal(synthetic_azure(1000, 60, seed=4).counts, tr.counts)


def test_shipped_samples_are_what_the_generator_writes(tmp_path):
    hashes = write_samples(tmp_path)
    for name, sha in hashes.items():
        shipped = (SAMPLES / name).read_bytes()
        assert (tmp_path / name).read_bytes() == shipped, f"{name} differs from the generator"
        assert hashlib.sha256(shipped).hexdigest() == sha
    assert "not real trace data" in (SAMPLES / "README.md").read_text()

"""Request bodies, checked field by field: a bad body is a 422 naming the field.

Plain functions over the decoded JSON (no schema library): each returns a
typed request or raises ``Invalid(field, message)``; the app turns that
into ``{"error": message, "field": field}``.  Bounds keep one request from
growing state or CPU without limit (names <= 256 characters, <= 256
candidates, <= 1,000 jobs per batch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_NAME = 256
MAX_CANDIDATES = 256
MAX_COLOCATED = 64
MAX_FEATURES = 64
MAX_BATCH = 1000
# Sinkhorn's epsilon is relative to the cost spread (costs are rescaled to [0, 1]): at 1e-6 the
# plan is already a hard assignment, and below ~1e-308 ``cost / epsilon`` overflows to inf and
# the plan to NaN (the fuzzer sent 5e-324 and got a 500).
MIN_EPSILON = 1e-6


class Invalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass
class ScoreRequest:
    job_type: str
    candidate_gpu_types: list[str]
    colocated: list[str] = field(default_factory=list)  # on every candidate
    colocated_by_gpu: dict[str, list[str]] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    def colocated_on(self, gpu: str) -> list[str]:
        return self.colocated_by_gpu.get(gpu, self.colocated)


@dataclass
class ObserveRequest:
    job_type: str
    gpu_type: str
    measured_runtime_s: float
    colocated: list[str] = field(default_factory=list)


@dataclass
class AssignRequest:
    jobs: list[ScoreRequest]
    candidate_gpu_types: list[str]
    capacities: list[int] | None
    epsilon: float
    max_iter: int


def _obj(body: Any, where: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(where, "must be a JSON object")
    return body


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid(where, "must be a non-empty string")
    if len(v) > MAX_NAME:
        raise Invalid(where, f"longer than {MAX_NAME} characters")
    return v.strip()


def _names(v: Any, where: str, most: int, unique: bool = False, empty: bool = True) -> list[str]:
    if not isinstance(v, list):
        raise Invalid(where, "must be a list of strings")
    if not empty and not v:
        raise Invalid(where, "must not be empty")
    if len(v) > most:
        raise Invalid(where, f"more than {most} entries")
    out = [_name(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if unique and len(set(out)) != len(out):
        dup = next(x for x in out if out.count(x) > 1)
        raise Invalid(where, f"{dup!r} appears more than once")
    return out


def _number(v: Any, where: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise Invalid(where, "must be a finite number")
    if v < lo or v > hi or (lo_open and v == lo):
        raise Invalid(where, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(v)


def _unknown(body: dict[str, Any], allowed: set[str], where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise Invalid(f"{where}{extra[0]}",
                      f"unknown field (expected: {', '.join(sorted(allowed))})")


def _features(v: Any) -> dict[str, Any]:
    """The seed's JobFeatures: a flat object of numbers, strings or booleans."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Invalid("features", "must be an object of name -> number, string or boolean")
    if len(v) > MAX_FEATURES:
        raise Invalid("features", f"more than {MAX_FEATURES} features")
    for k, x in v.items():
        if len(k) > MAX_NAME:
            raise Invalid("features", f"a name is longer than {MAX_NAME} characters")
        if isinstance(x, float) and not math.isfinite(x):
            raise Invalid(f"features.{k}", "must be finite")
        if not isinstance(x, (bool, int, float, str)):
            raise Invalid(f"features.{k}", "must be a number, string or boolean")
        if isinstance(x, str) and len(x) > MAX_NAME:
            raise Invalid(f"features.{k}", f"longer than {MAX_NAME} characters")
    return dict(v)


def _colocated(v: Any, gpus: list[str], where: str) -> tuple[list[str], dict[str, list[str]]]:
    """A list (the same neighbours on every candidate, the seed's form) or an object
    gpu_type -> list (what already runs on each candidate; ours)."""
    if v is None:
        return [], {}
    if isinstance(v, dict):
        by = {}
        for g, lst in v.items():
            if g not in gpus:
                raise Invalid(f"{where}.{g}", "is not one of candidate_gpu_types")
            by[g] = _names(lst, f"{where}.{g}", MAX_COLOCATED)
        return [], by
    return _names(v, where, MAX_COLOCATED), {}


def score_request(body: Any, where: str = "") -> ScoreRequest:
    b = _obj(body, where.rstrip(".") or "body")
    _unknown(b, {"job_type", "features", "candidate_gpu_types", "colocated_job_types",
                 "dry_run"}, where)
    if "job_type" not in b:
        raise Invalid(f"{where}job_type", "is required")
    job = _name(b["job_type"], f"{where}job_type")
    if "candidate_gpu_types" not in b:
        raise Invalid(f"{where}candidate_gpu_types", "is required")
    gpus = _names(b["candidate_gpu_types"], f"{where}candidate_gpu_types", MAX_CANDIDATES,
                  unique=True, empty=False)
    co, co_by = _colocated(b.get("colocated_job_types"), gpus, f"{where}colocated_job_types")
    dry = b.get("dry_run", False)
    if not isinstance(dry, bool):
        raise Invalid(f"{where}dry_run", "must be true or false")
    return ScoreRequest(job, gpus, co, co_by, _features(b.get("features")), dry)


def observe_request(body: Any) -> ObserveRequest:
    b = _obj(body)
    _unknown(b, {"job_type", "gpu_type", "measured_runtime_s", "colocated_job_types",
                 "features"})
    for req in ("job_type", "gpu_type", "measured_runtime_s"):
        if req not in b:
            raise Invalid(req, "is required")
    _features(b.get("features"))
    co = b.get("colocated_job_types")
    return ObserveRequest(_name(b["job_type"], "job_type"), _name(b["gpu_type"], "gpu_type"),
                          _number(b["measured_runtime_s"], "measured_runtime_s", 0.0, 1e9,
                                  lo_open=True),
                          [] if co is None else _names(co, "colocated_job_types", MAX_COLOCATED))


def assign_request(body: Any) -> AssignRequest:
    b = _obj(body)
    _unknown(b, {"jobs", "candidate_gpu_types", "capacities", "epsilon", "max_iter"})
    if "candidate_gpu_types" not in b:
        raise Invalid("candidate_gpu_types", "is required")
    gpus = _names(b["candidate_gpu_types"], "candidate_gpu_types", MAX_CANDIDATES,
                  unique=True, empty=False)
    jobs_raw = b.get("jobs")
    if not isinstance(jobs_raw, list) or not jobs_raw:
        raise Invalid("jobs", "must be a non-empty list of {job_type, colocated_job_types}")
    if len(jobs_raw) > MAX_BATCH:
        raise Invalid("jobs", f"more than {MAX_BATCH} jobs")
    jobs = []
    for i, j in enumerate(jobs_raw):
        j = _obj(j, f"jobs[{i}]")
        _unknown(j, {"job_type", "colocated_job_types", "features"}, f"jobs[{i}].")
        jobs.append(score_request({**j, "candidate_gpu_types": gpus}, f"jobs[{i}]."))
    caps = None
    if b.get("capacities") is not None:
        c = _obj(b["capacities"], "capacities")
        caps = []
        for g in c:
            if g not in gpus:
                raise Invalid(f"capacities.{g}", "is not one of candidate_gpu_types")
        for g in gpus:
            v = c.get(g, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise Invalid(f"capacities.{g}", "must be a non-negative integer")
            caps.append(v)
        if sum(caps) < len(jobs):
            raise Invalid("capacities", f"hold {sum(caps)} jobs, the batch has {len(jobs)}")
    eps = _number(b.get("epsilon", 0.05), "epsilon", MIN_EPSILON, 10.0)
    it = b.get("max_iter", 2000)
    if isinstance(it, bool) or not isinstance(it, int) or not 1 <= it <= 10000:
        raise Invalid("max_iter", "must be an integer in [1, 10000]")
    return AssignRequest(jobs, gpus, caps, eps, it)

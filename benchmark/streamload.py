"""Open-loop load on a streaming (token by token) endpoint, timed at the client.

Like ``openloop.run``: every request has a planned send time and is sent then
whatever earlier ones are doing, and times count from the *planned* moment
(no coordinated omission).  Per request it records when each NDJSON line
arrived, so TTFT (planned send -> first token) and the gaps between tokens
are what a user of the stream saw, proxies and queues included.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests


@dataclass
class StreamResult:
    planned_s: float
    status: int = 0
    ttft_s: float = float("nan")
    latency_s: float = float("nan")        # planned send -> last line (the summary)
    gaps_s: list[float] = field(default_factory=list)  # between consecutive tokens
    tokens: int = 0
    finish: str = ""
    stage_ms: list[dict[str, float]] = field(default_factory=list)  # per token, Server-Timing
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error and self.tokens > 0


def stream_one(session: requests.Session, url: str, body: bytes, planned: float,
               timeout_s: float = 300.0) -> StreamResult:
    """POST ``body``, read the NDJSON stream line by line; times relative to ``planned``
    (a ``time.perf_counter()`` value)."""
    res = StreamResult(planned_s=planned)
    last = None
    try:
        with session.post(url, data=body, headers={"Content-Type": "application/json"},
                          stream=True, timeout=timeout_s) as r:
            res.status = r.status_code
            if r.status_code != 200:
                res.error = r.text[:300]
                res.latency_s = time.perf_counter() - planned
                return res
            for raw in r.iter_lines():
                now = time.perf_counter()
                doc: dict[str, Any] = json.loads(raw)
                if "error" in doc:
                    res.error = str(doc["error"])
                    break
                if doc.get("done"):
                    res.finish = str(doc.get("finish_reason", ""))
                    res.latency_s = now - planned
                    break
                if last is None:
                    res.ttft_s = now - planned
                else:
                    res.gaps_s.append(now - last)
                last = now
                res.tokens += 1
                res.stage_ms.append({k: float(v) for k, v in doc.get("timing", {}).items()})
    except (requests.RequestException, ValueError) as e:
        res.error = type(e).__name__
    if res.latency_s != res.latency_s:  # NaN: the stream ended without its summary
        res.latency_s = time.perf_counter() - planned
        res.error = res.error or "stream ended without a summary line"
    return res


def run(url: str, body: bytes | Callable[[int], bytes], offsets: np.ndarray, workers: int = 64,
        timeout_s: float = 300.0,
        on_done: Callable[[StreamResult], None] | None = None) -> tuple[list[StreamResult], float]:
    """Send request i at ``offsets[i]`` seconds after the start; returns (results sorted by
    planned time, the start as a ``time.time()`` wall clock)."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=workers))
    lock = threading.Lock()
    results: list[StreamResult] = []
    start = time.perf_counter() + 0.05
    wall = time.time() + 0.05

    def one(i: int, off: float) -> None:
        planned = start + off
        delay = planned - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        payload = body(i) if callable(body) else body
        res = stream_one(session, url, payload, planned, timeout_s)
        res.planned_s = off
        with lock:
            results.append(res)
        if on_done:
            on_done(res)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, off in enumerate(offsets):
            wait = start + float(off) - 0.01 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            pool.submit(one, i, float(off))
    return sorted(results, key=lambda r: r.planned_s), wall

"""GAT training off the control cycle: a separate process, its model swapped in atomically.

Why a process and not a thread: a training round is ~1.6 s of mostly Python-level torch
work on the stored history (2,000 observations); in a thread it would hold the GIL against
the cycle, which at 1,000 stages needs ~80 ms of Python per period.  A spawned process
(never forked: the plugin has threads, and a zygote-style fork of torch state is not
needed) reads the history from Redis itself, so the cycle's thread does no more than
hand over the current predictor and later pick up a result.

Atomic: the controller adopts a finished round only at the start of a cycle, under its
lock, replacing the predictor, its reason and its checkpoint together; a cycle therefore
decides wholly with the old model or wholly with the new one, never waits for training,
and at most one round runs at a time (a due round is skipped while one is running).
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from gateway_plugin.policies import chain
from gateway_plugin.policies.observation import PipelineObservation
from gateway_plugin.training import TrainingRound, retrain

log = logging.getLogger("gateway_plugin.trainer")


@dataclass(frozen=True)
class Trained:
    """What a round changes in ``QuartState`` (all three together) and what it saw."""

    predictor: str
    reason: str
    checkpoint: bytes | None
    round: TrainingRound


def train_on(state: chain.QuartState, history: list[PipelineObservation]) -> Trained:
    """One round on ``history`` (raises ``training.TrainingError`` when it fails)."""
    new, rnd = retrain(state, history)
    return Trained(new.predictor, new.predictor_reason, new.gat_checkpoint, rnd)


def adopt(state: chain.QuartState, t: Trained) -> chain.QuartState:
    """``state`` (its pipelines as the cycles left them) with the round's predictor."""
    import dataclasses

    return dataclasses.replace(state, predictor=t.predictor, predictor_reason=t.reason,
                               gat_checkpoint=t.checkpoint)


def parse_history(docs: list[dict[str, object]]) -> list[PipelineObservation]:
    """Stored observations; a document this version cannot read is skipped, not fatal."""
    out = []
    for doc in docs:
        try:
            out.append(PipelineObservation.from_dict(doc))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _round_in_child(redis_url: str, prefix: str, predictor: str, reason: str,
                    checkpoint: bytes | None) -> Trained:
    """Runs in the trainer process: history from Redis, one round, the result back."""
    import torch

    from gateway_plugin.store import Store

    torch.set_num_threads(1)  # one core for training; the other stays the cycle's
    state = chain.QuartState(predictor=predictor, predictor_reason=reason,
                             gat_checkpoint=checkpoint)
    return train_on(state, parse_history(Store(redis_url, prefix).history()))


PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """The trainer process's initializer: it goes when the plugin goes.  Its task queue
    holds both ends of its pipe, so a plugin killed with -9 left it waiting forever (one
    orphan per plugin restart, seen after the soak's plugin kills)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the plugin died before the signal was armed
        os._exit(0)


def new_pool() -> ProcessPoolExecutor:
    """One spawned worker that dies with this process (never forked: see the docstring)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with, initargs=(os.getpid(),))


class BackgroundTrainer:
    """At most one training round at a time in a spawned worker process."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url, self.prefix = redis_url, prefix
        self._pool: ProcessPoolExecutor | None = None
        self._job: Future[Trained] | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.done()

    def start(self, state: chain.QuartState) -> bool:
        """Begin a round from ``state``'s predictor; False when one is still running."""
        if self._job is not None:
            return False  # running, or finished and not yet taken
        if self._pool is None:
            self._pool = new_pool()
        self._job = self._pool.submit(_round_in_child, self.redis_url, self.prefix,
                                      state.predictor, state.predictor_reason,
                                      state.gat_checkpoint)
        return True

    def take(self) -> Trained | None:
        """The finished round's result (never blocks); re-raises what the round raised."""
        if self._job is None or not self._job.done():
            return None
        job, self._job = self._job, None
        try:
            return job.result()
        except BrokenProcessPool:  # the worker died (OOM-killed, ...): a new one next round
            self.close()
            raise

    def wait(self, timeout_s: float) -> bool:
        """For tests and shutdown: True when the running round (if any) has finished."""
        if self._job is None:
            return True
        try:
            self._job.exception(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

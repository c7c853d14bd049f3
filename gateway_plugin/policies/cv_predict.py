"""Arrival-CV prediction over the pipeline graph (Eq. 4-5): baselines and a GAT.

Burstiness travels down a pipeline, reshaped by every queue on the way: a
busy stage smooths a burst, a lightly loaded one passes it through.  The
smoother (Eq. 6) needs each stage's arrival CV for the *next* period, so it
can add headroom before the burst arrives rather than after.

Predictors, all over the same raw per-stage features (``FEATURES``):

* ``copy_upstream``, ``qna`` (Whitt's QNA linking equation) and
  ``upstream_departure``: the analytical baselines, in ``cv_baselines``
  (numpy only; re-exported here);
* ``gat``: a graph attention network (Veličković et al., "Graph Attention
  Networks", ICLR 2018) in plain torch.  Eq. 4, attention of stage i to a
  neighbour j (its upstreams and itself):
  ``alpha_ij = softmax_j LeakyReLU(a^T [W h_i || W h_j])``; Eq. 5, update
  ``h_i' = ELU(||_heads sum_j alpha_ij W h_j)``; two layers, then a linear
  read-out of log CV.  Edges only point downstream, so a stage's forecast can
  depend on its upstreams, never on stages after it.

The running system must not act on random weights: a GAT is used only when a
trained checkpoint beat every baseline on held-out data (``select_predictor``).
Checkpoints are safetensors bytes plus JSON metadata, never pickle.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from .cv_baselines import (
    BASELINES,
    FEATURES,
    baseline_predict,
    baseline_predict_many,
    qna_departure_cv,
)

__all__ = [
    "BASELINES",
    "CVGAT",
    "FEATURES",
    "CVSample",
    "TrainResult",
    "baseline_predict",
    "baseline_predict_many",
    "checkpoint_from_bytes",
    "checkpoint_to_bytes",
    "encode_features",
    "evaluate",
    "predict",
    "qna_departure_cv",
    "select_predictor",
    "train",
]

_RATE, _ACV, _DCV, _SMEAN, _SCV, _REPL, _UTIL = range(len(FEATURES))
_FORMAT = "quart-cv-gat/1"


@dataclass(frozen=True)
class CVSample:
    """One pipeline at period t: raw features [n, len(FEATURES)], each stage's
    upstream indices, and the arrival CV each stage showed at t+1 (target)."""

    features: np.ndarray
    upstream: tuple[tuple[int, ...], ...]
    target: np.ndarray
    group: int = 0
    t_s: float = 0.0  # when the features were observed: a lone pipeline is held out by time


# ---------------------------------------------------------------- GAT (Eq. 4-5)


def encode_features(raw: np.ndarray, upstream: Sequence[Sequence[int]]) -> np.ndarray:
    """Fixed, scale-free transforms (logs of rates, times and CVs) plus a source flag.

    A missing value becomes the neutral one (CV 1 = Poisson, utilisation 0).
    """
    r = np.asarray(raw, dtype=np.float64)

    def cv(col: int) -> np.ndarray:
        return np.log(np.clip(np.nan_to_num(r[:, col], nan=1.0), 0.05, 20.0))

    x = np.stack(
        [
            np.log1p(np.clip(np.nan_to_num(r[:, _RATE], nan=0.0), 0.0, 1e6)),
            cv(_ACV),
            cv(_DCV),
            np.log(np.clip(np.nan_to_num(r[:, _SMEAN], nan=1.0), 1e-4, 1e4)),
            cv(_SCV),
            np.log(np.clip(np.nan_to_num(r[:, _REPL], nan=1.0), 1.0, 1e4)),
            np.clip(np.nan_to_num(r[:, _UTIL], nan=0.0), 0.0, 1.5),
            np.array([0.0 if p else 1.0 for p in upstream]),
        ],
        axis=1,
    )
    return x.astype(np.float32)


N_INPUTS = 8


class GATLayer(nn.Module):
    """Dense masked multi-head graph attention (Eq. 4-5), batched over pipelines."""

    def __init__(self, in_dim: int, out_dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.out_dim = heads, out_dim
        self.lin = nn.Linear(in_dim, heads * out_dim, bias=False)
        self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
        self.att_src = nn.Parameter(torch.empty(heads, out_dim))
        self.bias = nn.Parameter(torch.zeros(heads * out_dim))
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_dst)
        nn.init.xavier_uniform_(self.att_src)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        wh: torch.Tensor = self.lin(h)
        z = wh.view(b, n, self.heads, self.out_dim).transpose(1, 2)  # [b, H, n, d]
        # a^T [W h_i || W h_j] = a_dst . W h_i + a_src . W h_j
        e_dst = (z * self.att_dst[:, None, :]).sum(-1)  # [b, H, n]
        e_src = (z * self.att_src[:, None, :]).sum(-1)
        e = nn.functional.leaky_relu(e_dst[..., :, None] + e_src[..., None, :], 0.2)
        e = e.masked_fill(~adj[:, None], float("-inf"))  # [b, H, i, j]
        alpha = torch.softmax(e, dim=-1)  # over neighbours j of i
        # a broadcast sum beats bmm here: pipelines are a handful of stages long
        out = (alpha[..., None] * z[:, :, None, :, :]).sum(-2).transpose(1, 2).reshape(b, n, -1)
        return out + self.bias


class CVGAT(nn.Module):
    """Two GAT layers (ELU) and a linear read-out of log(next arrival CV)."""

    def __init__(self, hidden: int = 8, heads: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.config = {"hidden": hidden, "heads": heads, "inputs": N_INPUTS}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.gat1 = GATLayer(N_INPUTS, hidden, heads)
            self.gat2 = GATLayer(hidden * heads, hidden, heads)
            self.readout = nn.Linear(hidden * heads + N_INPUTS, 1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        h = nn.functional.elu(self.gat1(x, adj))
        h = nn.functional.elu(self.gat2(h, adj))
        y: torch.Tensor = self.readout(torch.cat([h, x], dim=-1))
        return y.squeeze(-1)


def _batch(
    graphs: Sequence[tuple[np.ndarray, Sequence[Sequence[int]]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad pipelines to the longest: x [B, N, F], adjacency [B, N, N], node mask [B, N].

    Built with one encode over all stages and index arrays, because the
    control loop batches hundreds of pipelines into a single call.
    """
    sizes = [len(up) for _, up in graphs]
    n_max = max(sizes)
    rows = np.repeat(np.arange(len(graphs)), sizes)
    cols = np.concatenate([np.arange(n) for n in sizes])
    flat_up = [parents for _, up in graphs for parents in up]
    raw = np.concatenate([np.asarray(r, dtype=float).reshape(-1, len(FEATURES)) for r, _ in graphs])
    x = np.zeros((len(graphs), n_max, N_INPUTS), dtype=np.float32)
    x[rows, cols] = encode_features(raw, flat_up)
    mask = np.zeros((len(graphs), n_max), dtype=bool)
    mask[rows, cols] = True
    adj = np.zeros((len(graphs), n_max, n_max), dtype=bool)
    idx = np.arange(n_max)
    adj[:, idx, idx] = True  # self-loops, also on padding so no row is all -inf
    eb, ei, ej = [], [], []
    for k, parents in enumerate(flat_up):
        for j in parents:
            eb.append(rows[k])
            ei.append(cols[k])
            ej.append(j)
    adj[eb, ei, ej] = True
    return torch.from_numpy(x), torch.from_numpy(adj), torch.from_numpy(mask)


def predict(
    model: CVGAT, graphs: Sequence[tuple[np.ndarray, Sequence[Sequence[int]]]]
) -> list[np.ndarray]:
    """Next-period arrival CV per stage for many pipelines in one forward pass."""
    if not graphs:
        return []
    x, adj, _ = _batch(graphs)
    with torch.inference_mode():
        out = torch.exp(model(x, adj)).numpy()
    return [out[b, : len(up)].astype(float) for b, (_, up) in enumerate(graphs)]


# ---------------------------------------------------------------- training and selection


@dataclass(kw_only=True)
class TrainResult:
    model: CVGAT
    state: dict[str, torch.Tensor]
    train_loss: list[float]
    val_loss: list[float]
    best_epoch: int
    train_groups: list[int]
    val_groups: list[int]
    val_samples: list[CVSample]
    holdout: str  # "pipelines" held out whole, or "time": a lone pipeline's later windows


def _targets(samples: Sequence[CVSample], n_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = np.zeros((len(samples), n_max), dtype=np.float32)
    ok = np.zeros((len(samples), n_max), dtype=bool)
    for b, s in enumerate(samples):
        t = np.asarray(s.target, dtype=float)
        good = np.isfinite(t) & (t > 0)
        y[b, : t.size][good] = np.log(t[good])
        ok[b, : t.size] = good
    return torch.from_numpy(y), torch.from_numpy(ok)


def split_groups(
    samples: Sequence[CVSample], val_fraction: float, seed: int
) -> tuple[list[CVSample], list[CVSample]]:
    """Hold out whole pipelines (groups), so validation never sees a training pipeline;
    with one pipeline, hold out its later windows (``split_time``)."""
    groups = sorted({s.group for s in samples})
    if len(groups) == 1:
        return split_time(samples, val_fraction)
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    n_val = max(1, round(len(groups) * val_fraction))
    val = set(groups[:n_val])
    return [s for s in samples if s.group not in val], [s for s in samples if s.group in val]


def split_time(
    samples: Sequence[CVSample], val_fraction: float
) -> tuple[list[CVSample], list[CVSample]]:
    """The last ``val_fraction`` of the windows for validation, the earlier ones for training,
    so the predictor is scored on a future it never saw (a forecast, as it is used).  The
    training window just before the cut is dropped: its target is the first validation
    window's observation, which would leak across the cut."""
    order = sorted(samples, key=lambda s: s.t_s)
    if len(order) < 3:
        return list(order), []
    n_val = max(1, round(len(order) * val_fraction))
    return order[: len(order) - n_val - 1], order[len(order) - n_val:]


def train(
    model: CVGAT,
    samples: Sequence[CVSample],
    epochs: int = 150,
    lr: float = 2e-2,
    seed: int = 0,
    *,
    val_fraction: float = 0.25,
    weight_decay: float = 1e-4,
) -> TrainResult:
    """Full-batch Adam on squared error of log CV; keeps the best validation epoch.

    Log space because CV errors are multiplicative (predicting 2 for 4 is as
    wrong as 0.5 for 1) and the Allen-Cunneen factor uses c^2.  The input
    model is not modified; the result holds a trained copy.
    """
    train_set, val_set = split_groups(samples, val_fraction, seed)
    if not train_set:
        raise ValueError("no training samples")
    model = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x, adj, _ = _batch([(s.features, s.upstream) for s in train_set])
        y, ok = _targets(train_set, x.shape[1])
        if val_set:
            vx, vadj, _ = _batch([(s.features, s.upstream) for s in val_set])
            vy, vok = _targets(val_set, vx.shape[1])
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        train_hist: list[float] = []
        val_hist: list[float] = []
        best = (math.inf, -1, copy.deepcopy(model.state_dict()))
        for epoch in range(epochs):
            model.train()
            opt.zero_grad()
            loss = ((model(x, adj) - y)[ok] ** 2).mean()
            loss.backward()
            opt.step()
            train_hist.append(float(loss.detach()))
            if val_set:
                model.eval()
                with torch.no_grad():
                    v = float(((model(vx, vadj) - vy)[vok] ** 2).mean())
                val_hist.append(v)
                if v < best[0]:
                    best = (v, epoch, copy.deepcopy(model.state_dict()))
        if val_set:
            model.load_state_dict(best[2])
    model.eval()
    return TrainResult(
        model=model,
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        train_loss=train_hist,
        val_loss=val_hist,
        best_epoch=best[1] if val_set else epochs - 1,
        train_groups=sorted({s.group for s in train_set}),
        val_groups=sorted({s.group for s in val_set}),
        val_samples=val_set,
        holdout="time" if len({s.group for s in samples}) == 1 else "pipelines",
    )


def evaluate(
    model: CVGAT | None, samples: Sequence[CVSample], *, downstream_only: bool = False
) -> dict[str, float]:
    """Mean absolute error in CV units of the GAT (if given) and every baseline.

    ``downstream_only`` scores only stages with an upstream, where the
    predictors differ (all of them keep a source stage's own CV).
    """
    graphs = [(s.features, s.upstream) for s in samples]
    preds = {name: baseline_predict_many(name, graphs) for name in BASELINES}
    if model is not None:
        preds["gat"] = predict(model, [(s.features, s.upstream) for s in samples])
    errors: dict[str, float] = {}
    for name, per_sample in preds.items():
        diffs = []
        for s, p in zip(samples, per_sample, strict=True):
            keep = np.isfinite(s.target) & np.isfinite(p)
            if downstream_only:
                keep &= np.array([bool(u) for u in s.upstream])
            diffs.append(np.abs(p[keep] - s.target[keep]))
        flat = np.concatenate(diffs) if diffs else np.array([])
        errors[name] = float(flat.mean()) if flat.size else math.nan
    return errors


def select_predictor(validation_errors: Mapping[str, float]) -> tuple[str, str]:
    """The GAT only when it beats every baseline on held-out data; else the best baseline."""
    base = {k: v for k, v in validation_errors.items() if k != "gat" and math.isfinite(v)}
    if not base:
        raise ValueError("need the validation error of at least one baseline")
    best_base = min(base, key=lambda k: base[k])
    gat = validation_errors.get("gat")
    summary = ", ".join(f"{k} {v:.3f}" for k, v in sorted(validation_errors.items()))
    if gat is None or not math.isfinite(gat):
        return best_base, f"{best_base}: no validated GAT ({summary})"
    if gat < base[best_base]:
        return "gat", f"gat: beats every baseline on validation MAE ({summary})"
    return best_base, f"{best_base}: GAT does not beat it on validation MAE ({summary})"


# ---------------------------------------------------------------- checkpoints


def checkpoint_to_bytes(model: CVGAT, metadata: Mapping[str, Any] | None = None) -> bytes:
    """safetensors bytes; ``metadata`` must be JSON-serialisable and comes back as is."""
    meta = {"format": _FORMAT, "model": model.config, "features": list(FEATURES)}
    meta["user"] = dict(metadata or {})
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return safetensors.torch.save(tensors, metadata={"quart": json.dumps(meta, sort_keys=True)})


def checkpoint_from_bytes(data: bytes) -> tuple[CVGAT, dict[str, Any]]:
    """Rebuild the model from a checkpoint; raises ValueError if it is not one of ours."""
    if len(data) < 8:
        raise ValueError("not a safetensors checkpoint")
    # safetensors layout: u64 little-endian header length, then a JSON header
    # whose "__metadata__" holds our string map.
    (header_len,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"]["quart"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a Quart CV checkpoint: {exc}") from None
    if meta.get("format") != _FORMAT or meta.get("features") != list(FEATURES):
        raise ValueError(f"unsupported checkpoint format {meta.get('format')!r}")
    cfg = meta["model"]
    model = CVGAT(hidden=int(cfg["hidden"]), heads=int(cfg["heads"]))
    model.load_state_dict(safetensors.torch.load(data), strict=True)
    model.eval()
    return model, meta["user"]

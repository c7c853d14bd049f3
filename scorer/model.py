"""The information-theoretic scheduler model: pure state and arithmetic, no I/O.

Per (job_type, gpu_type) pair it keeps a Gaussian belief about the mean
runtime, N(mu, sigma^2), and an estimate tau^2 of the runtime noise of one
observation.  A candidate's cost is the seed's objective

    cost(j, g) = mu[j,g] + lambda * sqrt(sigma^2[j,g]) - beta * IG[j,g]
                 + gamma * interference_penalty(j, g, colocated)          (Eq. 1)

    IG[j,g] = 0.5 * log(1 + sigma^2[j,g] / tau^2[j,g])                    (Eq. 2)

Eq. 2 is the mutual information between the unknown mean and one more
observation (the Gaussian channel, Cover & Thomas, *Elements of Information
Theory*, Sec. 9.1: C = 1/2 log(1 + P/N)): what running the job there would
teach us.  beta converts nats into seconds of runtime we are willing to pay.

Exploration is defined exactly: a decision is *exploratory* when the
information-gain term changed it, i.e. the candidate with the lowest cost
(Eq. 1) is not one with the lowest exploitation cost
``mu + lambda*sigma + gamma*penalty`` (Eq. 1 with beta = 0).  The cap holds
over a sliding window of the last ``SCHEDULER_EXPLORATION_WINDOW`` decisions
(or cumulatively when it is 0): an exploratory choice is allowed only if the
window's exploratory share, counting this decision, stays <= the cap;
otherwise the exploitation choice is taken and the decision is ``capped``.
So after every decision ``exploratory / decisions (in the window) <= cap``.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

from scorer.config import ScorerConfig

_TIE = 1e-12          # relative: costs closer than this are equal
_SLOWDOWN_MIN = -0.9  # a co-location may speed a job up a little, never to zero runtime
_SLOWDOWN_MAX = 1e3


@dataclass
class Posterior:
    """Belief about the runtime of one job type on one GPU type."""
    n: int         # observations folded into mu
    mu: float      # posterior mean of the runtime, s
    var: float     # sigma^2: posterior variance of mu, s^2 (epistemic, shrinks with data)
    noise: float   # tau^2: EMA variance of one runtime around mu, s^2 (aleatoric)


@dataclass
class Slowdown:
    """Relative extra runtime of a job per co-located instance of another job type."""
    s: float
    n: int


def information_gain(var: float, noise: float) -> float:
    """Eq. 2: IG = 0.5 * log(1 + sigma^2 / tau^2), in nats."""
    return 0.5 * math.log1p(var / noise)


def objective(mu: float, var: float, ig: float, penalty: float, cfg: ScorerConfig) -> float:
    """Eq. 1: mu + lambda*sqrt(sigma^2) - beta*IG + gamma*interference_penalty."""
    return (mu + cfg.lambda_uncertainty * math.sqrt(var) - cfg.beta_exploration * ig
            + cfg.gamma_interference * penalty)


def ema_variance_floor(noise: float, alpha: float) -> float:
    """Variance of an EMA with weight alpha over i.i.d. samples of variance tau^2:
    alpha^2 * sum_i (1-alpha)^(2i) * tau^2 = alpha / (2 - alpha) * tau^2.

    sigma^2 never falls below it, so the mean keeps tracking a runtime that
    drifts (a new driver, a busier node) the way the seed's EMA does, instead
    of freezing after thousands of observations."""
    return alpha / (2.0 - alpha) * noise


def _noise_floor(mu: float) -> float:
    return (1e-6 * abs(mu)) ** 2 + 1e-18  # keeps Eq. 2 finite for perfectly repeatable runs


def update_posterior(p: Posterior, y: float, cfg: ScorerConfig,
                     informative: bool = True) -> Posterior:
    """Fold one runtime y into the belief.

    Mean and sigma^2: the conjugate Gaussian update (Murphy 2007, "Conjugate
    Bayesian analysis of the Gaussian distribution", Eqs. 20-21) written as
    an EMA with data-driven weight k = sigma^2 / (sigma^2 + tau^2):
        mu <- mu + k (y - mu);  sigma^2 <- (1 - k) sigma^2,
    floored at ``ema_variance_floor``.  tau^2: the exponentially weighted
    variance (Finch 2009, "Incremental calculation of weighted mean and
    variance", Sec. 9): tau^2 <- (1 - w)(tau^2 + w (y - mu)^2), with
    w = max(alpha, 1/(n+1)) so early observations are not under-weighted.

    The first observation of a pair resets tau to NOISE_CV * y (the prior's
    scale may be far off).  ``informative=False`` (the job type was never
    observed anywhere, so the prior is SCHEDULER_PRIOR_MEAN_S, a guess with no
    relation to this job's scale) is the flat-prior limit sigma0 -> inf:
    mu = y, sigma^2 = tau^2, i.e. what one sample tells about a mean.
    """
    if p.n == 0 and not informative:
        noise = max((cfg.noise_cv * y) ** 2, _noise_floor(y))
        return Posterior(1, y, noise, noise)
    k = p.var / (p.var + p.noise)
    mu = p.mu + k * (y - p.mu)
    var = (1.0 - k) * p.var
    if p.n == 0:
        noise = (cfg.noise_cv * y) ** 2
    else:
        w = max(cfg.ema_alpha, 1.0 / (p.n + 1))
        noise = (1.0 - w) * (p.noise + w * (y - p.mu) ** 2)
    noise = max(noise, _noise_floor(mu))
    var = max(var, ema_variance_floor(noise, cfg.ema_alpha))
    return Posterior(p.n + 1, mu, var, noise)


class ExplorationWindow:
    """Exploratory decisions over the last ``size`` decisions (all of them if size == 0)."""

    def __init__(self, cap: float, size: int) -> None:
        self.cap, self.size = cap, size
        self.bits: deque[int] = deque(maxlen=size or None)
        self.ones = 0  # exploratory decisions in ``bits``
        self.decisions = self.exploratory = self.capped = 0  # totals since the first start

    def ratio(self) -> float:
        if self.size:
            return self.ones / len(self.bits) if self.bits else 0.0
        return self.exploratory / self.decisions if self.decisions else 0.0

    def allows_exploration(self) -> bool:
        """True when one more exploratory decision keeps the ratio <= cap."""
        if self.size:
            full = len(self.bits) == self.size
            ones = self.ones + 1 - (self.bits[0] if full else 0)
            m = self.size if full else len(self.bits) + 1
        else:
            ones, m = self.exploratory + 1, self.decisions + 1
        return ones <= self.cap * m + 1e-9

    def record(self, exploratory: bool, capped: bool = False) -> None:
        if self.size:
            if len(self.bits) == self.size:
                self.ones -= self.bits[0]
            self.bits.append(int(exploratory))
            self.ones += int(exploratory)
        self.decisions += 1
        self.exploratory += int(exploratory)
        self.capped += int(capped)

    def dump_bits(self) -> str:
        return "".join(map(str, self.bits))

    def load(self, bits: str, decisions: int, exploratory: int, capped: int) -> None:
        self.bits.clear()
        if self.size:  # a window resized between runs keeps its newest decisions
            self.bits.extend(1 if c == "1" else 0 for c in bits[-self.size:])
        self.ones = sum(self.bits)
        self.decisions, self.exploratory, self.capped = decisions, exploratory, capped


@dataclass
class Candidate:
    gpu_type: str
    n: int
    mu: float
    var: float
    noise: float
    information_gain: float
    slowdown: float
    interference_penalty: float
    cost: float
    exploit_cost: float

    def as_dict(self, cfg: ScorerConfig) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["sigma"] = math.sqrt(self.var)
        d["sigma2"] = d.pop("var")
        d["tau2"] = d.pop("noise")
        d["observations"] = d.pop("n")
        d["terms"] = {  # Eq. 1 term by term; their sum is ``cost``
            "mean": self.mu,
            "uncertainty": cfg.lambda_uncertainty * math.sqrt(self.var),
            "information_gain": -cfg.beta_exploration * self.information_gain,
            "interference": cfg.gamma_interference * self.interference_penalty,
        }
        return d


@dataclass
class Decision:
    job_type: str
    selected: str
    exploratory: bool   # the information gain chose ``selected`` over the exploitation choice
    capped: bool        # it wanted to explore, the cap said no
    reason: str
    ranked: list[Candidate]
    exploration_ratio: float


class SchedulerModel:
    """Beliefs, slowdowns and the exploration window; every method is pure arithmetic."""

    def __init__(self, cfg: ScorerConfig) -> None:
        self.cfg = cfg
        self.posteriors: dict[str, dict[str, Posterior]] = {}   # job -> gpu -> belief
        self.slowdowns: dict[str, dict[str, Slowdown]] = {}     # job -> co-located job -> s
        self.window = ExplorationWindow(cfg.exploration_cap, cfg.exploration_window)
        self.observations = 0

    # ------------------------------------------------------------------ beliefs

    def prior(self, job: str) -> Posterior:
        """A pair never observed: the job's mean on the GPU types it was seen on (runtimes
        transfer roughly), else SCHEDULER_PRIOR_MEAN_S; sigma = PRIOR_CV * mean."""
        seen = self.posteriors.get(job)
        m0 = (sum(p.mu for p in seen.values()) / len(seen)) if seen else self.cfg.prior_mean_s
        return Posterior(0, m0, (self.cfg.prior_cv * m0) ** 2,
                         max((self.cfg.noise_cv * m0) ** 2, _noise_floor(m0)))

    def belief(self, job: str, gpu: str) -> Posterior:
        p = self.posteriors.get(job, {}).get(gpu)
        return p if p is not None else self.prior(job)

    def slowdown(self, job: str, colocated: Iterable[str]) -> float:
        """Sum over co-located instances k of s[job, k] (unknown pairs count 0)."""
        learned = self.slowdowns.get(job, {})
        return sum(learned[k].s for k in colocated if k in learned)

    def avg_uncertainty(self) -> float:
        """Mean sigma (s) over learned pairs; nan before the first observation."""
        sig = [math.sqrt(p.var) for per in self.posteriors.values() for p in per.values()]
        return sum(sig) / len(sig) if sig else math.nan

    def pairs(self) -> int:
        return sum(len(per) for per in self.posteriors.values())

    # ------------------------------------------------------------------ scoring

    def candidate(self, job: str, gpu: str, colocated: list[str]) -> Candidate:
        p = self.belief(job, gpu)
        ig = information_gain(p.var, p.noise)
        s = self.slowdown(job, colocated) if self.cfg.enable_interference else 0.0
        penalty = p.mu * max(0.0, s)  # expected extra seconds from the co-location
        cost = objective(p.mu, p.var, ig, penalty, self.cfg)
        exploit = objective(p.mu, p.var, 0.0, penalty, self.cfg)
        return Candidate(gpu, p.n, p.mu, p.var, p.noise, ig, s, penalty, cost, exploit)

    def rank(self, job: str, gpus: list[str],
             colocated: Callable[[str], list[str]]) -> list[Candidate]:
        """Candidates by cost (Eq. 1); ties keep the caller's order."""
        cands = [self.candidate(job, g, colocated(g)) for g in gpus]
        return sorted(cands, key=lambda c: c.cost)

    def decide(self, job: str, gpus: list[str], colocated: Callable[[str], list[str]],
               record: bool = True) -> Decision:
        """Rank, classify the top choice as exploratory or not, enforce the cap, record."""
        ranked = self.rank(job, gpus, colocated)
        best = ranked[0]
        exploit = min(ranked, key=lambda c: c.exploit_cost)
        tol = _TIE * max(1.0, abs(exploit.exploit_cost))
        exploratory = best.exploit_cost > exploit.exploit_cost + tol
        capped = False
        if not exploratory:
            reason = "lowest cost is also the lowest expected runtime"
        elif self.window.allows_exploration():
            reason = (f"exploring: information gain {best.information_gain:.3g} nats outweighs "
                      f"{best.exploit_cost - exploit.exploit_cost:.3g} s over {exploit.gpu_type}")
        else:
            exploratory, capped = False, True
            ranked = sorted(ranked, key=lambda c: c.exploit_cost)
            reason = (f"exploration cap {self.cfg.exploration_cap:g} reached: exploiting "
                      f"{exploit.gpu_type} instead of exploring {best.gpu_type}")
        if record:
            self.window.record(exploratory, capped)
        return Decision(job, ranked[0].gpu_type, exploratory, capped, reason, ranked,
                        self.window.ratio())

    # ------------------------------------------------------------------ learning

    def observe(self, job: str, gpu: str, runtime_s: float,
                colocated: list[str]) -> tuple[str, list[tuple[str, str]]]:
        """Learn from one measured runtime.  Returns what was learned ("posterior",
        "interference" or both) and the (job, co-located job) slowdowns it changed.

        With interference learning on, a co-located runtime of a pair that has a
        belief teaches the slowdown only (the solo belief stays clean); without
        a belief yet, the runtime divided by (1 + current slowdown) seeds it.
        With it off, every runtime updates the belief as measured (the seed)."""
        self.observations += 1
        per = self.posteriors.setdefault(job, {})
        p = per.get(gpu)
        if self.cfg.enable_interference and colocated:
            if p is not None:
                return "interference", self._learn_slowdown(job, p.mu, runtime_s, colocated)
            runtime_s /= 1.0 + max(_SLOWDOWN_MIN, self.slowdown(job, colocated))
        informative = p is not None or bool(per)  # seen on this or another GPU type
        per[gpu] = update_posterior(p if p is not None else self.prior(job), runtime_s, self.cfg,
                                    informative)
        return "posterior", []

    def _learn_slowdown(self, job: str, base_s: float, y: float,
                        colocated: list[str]) -> list[tuple[str, str]]:
        """Normalised LMS (Widrow-Hoff) on the additive model
        y / mu - 1 = sum_k x_k s[job, k]  (x_k: instances of job type k co-located):
        e = y/mu - 1 - sum_k x_k s_k;  s_k += w_k e x_k / sum_k x_k^2,
        w_k = max(alpha, 1/(n_k+1)) (a running mean first, then an EMA).
        One co-located type: s is the EMA of the observed relative slowdown."""
        x = Counter(colocated)
        learned = self.slowdowns.setdefault(job, {})
        e = y / base_s - 1.0 - sum(xk * learned[k].s for k, xk in x.items() if k in learned)
        norm = float(sum(xk * xk for xk in x.values()))
        for k, xk in x.items():
            sl = learned.setdefault(k, Slowdown(0.0, 0))
            w = max(self.cfg.ema_alpha, 1.0 / (sl.n + 1))
            sl.s = min(_SLOWDOWN_MAX, max(_SLOWDOWN_MIN, sl.s + w * e * xk / norm))
            sl.n += 1
        return [(job, k) for k in x]

    # ------------------------------------------------------------------ state for a store

    def iter_posteriors(self) -> Iterator[tuple[str, str, Posterior]]:
        for job, per in self.posteriors.items():
            for gpu, p in per.items():
                yield job, gpu, p

    def iter_slowdowns(self) -> Iterator[tuple[str, str, Slowdown]]:
        for job, per in self.slowdowns.items():
            for other, s in per.items():
                yield job, other, s

    def counters(self) -> dict[str, int]:
        w = self.window
        return {"decisions": w.decisions, "exploratory": w.exploratory, "capped": w.capped,
                "observations": self.observations}

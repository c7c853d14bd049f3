"""Discrete PID on a relative latency error (Eq. 2-3), with anti-windup.

Sign convention (direct acting): the error is ``(measurement - setpoint) /
setpoint``, so latency *above* its target gives a *positive* error and a
positive output, which the replica corrector turns into *more* replicas.  A
public reconstruction used ``setpoint - measurement`` with the same positive
gains and therefore removed replicas from a stage that was too slow.

Implementation choices follow Åström & Murray, *Feedback Systems* (2008),
ch. 10 "PID Control" (integrator windup; implementation), and Åström & Hägglund, *Advanced PID
Control* (2006), ch. 3:

* **Anti-windup.**  The output drives an actuator with hard limits (replica
  counts are clamped).  While the output sits on a limit in the direction of
  the error, integrating more only stores error that must be unwound later
  (overshoot after the limit is released), so integration is switched off
  ("conditional integration").  The integral term is also clamped to
  ``±integral_limit`` in output units as a second, simpler guard.
* **Derivative on measurement.**  The D term uses ``d(measurement)/dt``, not
  ``d(error)/dt``: a setpoint change (a new SLO, or a new split of it) then
  moves P and I but does not produce a derivative "kick".  It is normalised by
  the *current* setpoint so the term stays dimensionless like the error.

Time is an input (``dt_s``), never read from a clock.  ``dt_s`` of 0 or a
first call (no previous measurement) contributes neither I nor D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PIDConfig", "PIDState", "PIDStep", "pid_step", "relative_error"]


@dataclass(frozen=True, kw_only=True)
class PIDConfig:
    """Gains (kp, ki per second, kd seconds) and output limits in output units."""

    kp: float = 2.0
    ki: float = 0.3
    kd: float = 0.1
    output_min: float = 0.0
    output_max: float = 1.0
    integral_limit: float = 1.0

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd", "integral_limit"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.output_min <= self.output_max:
            raise ValueError("output_min must be <= output_max")


@dataclass(frozen=True)
class PIDState:
    """What the controller carries from one period to the next (JSON-able)."""

    integral: float = 0.0
    last_measurement: float | None = None


@dataclass(slots=True, kw_only=True)
class PIDStep:
    output: float
    error: float
    p_term: float
    i_term: float
    d_term: float
    unsaturated: float
    integrated: bool
    state: PIDState


def relative_error(setpoint: float, measurement: float) -> float:
    """Eq. 2: e = (observed - target) / target; positive means too slow."""
    if not (math.isfinite(setpoint) and setpoint > 0):
        raise ValueError(f"setpoint must be a finite number > 0, got {setpoint!r}")
    if not (math.isfinite(measurement) and measurement >= 0):
        raise ValueError(f"measurement must be a finite number >= 0, got {measurement!r}")
    return (measurement - setpoint) / setpoint


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(value, high))


def pid_step(
    setpoint: float,
    measurement: float,
    dt_s: float | None,
    state: PIDState,
    config: PIDConfig,
    *,
    freeze_integral: bool = False,
) -> PIDStep:
    """Eq. 3: u = kp*e + ki*∫e dt + kd*d(y/r)/dt, saturated to [output_min, output_max].

    ``freeze_integral`` lets the caller stop integration for reasons of its
    own (the corrector does so while the feedforward model alone explains the
    error); the controller's own saturation rule applies regardless.
    """
    if dt_s is not None and (not math.isfinite(dt_s) or dt_s < 0):
        raise ValueError(f"dt_s must be a finite number >= 0 or None, got {dt_s!r}")
    error = relative_error(setpoint, measurement)
    dt = dt_s or 0.0
    p_term = config.kp * error
    d_term = 0.0
    if dt > 0 and state.last_measurement is not None:
        d_term = config.kd * (measurement - state.last_measurement) / (setpoint * dt)

    i_old = config.ki * state.integral
    u_old = p_term + i_old + d_term
    saturated_with_error = (u_old >= config.output_max and error > 0) or (
        u_old <= config.output_min and error < 0
    )
    integral = state.integral
    integrated = dt > 0 and config.ki > 0 and not saturated_with_error and not freeze_integral
    if integrated:
        integral = state.integral + error * dt
        bound = config.integral_limit / config.ki
        integral = _clamp(integral, -bound, bound)
    i_term = config.ki * integral
    unsaturated = p_term + i_term + d_term
    output = _clamp(unsaturated, config.output_min, config.output_max)
    new_state = PIDState(integral=integral, last_measurement=measurement)
    return PIDStep(
        output=output,
        error=error,
        p_term=p_term,
        i_term=i_term,
        d_term=d_term,
        unsaturated=unsaturated,
        integrated=integrated,
        state=new_state,
    )

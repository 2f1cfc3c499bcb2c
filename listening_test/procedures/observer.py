"""A minimal simulated same/different observer, and the psychometric model it shares
with the Bayesian procedure.

P(different | level) = γ + (1 − γ − λ) · F(level; threshold, slope)

γ is the false-alarm rate (answering "different" to an identical pair), λ the lapse
rate, F a logistic or Weibull CDF. Everywhere in jndlab the JND ("threshold") is
the level where F = 0.5, i.e. where P(different) lies halfway between γ and 1 − λ.

Slope units depend on the function: for the logistic, ``slope`` is per level unit
(F runs from 0.1 to 0.9 over 2·ln 9 / slope ≈ 4.4 / slope levels); for the Weibull
it is the dimensionless shape β of F = 1 − 2^(−(level/threshold)^β), written so
that F(threshold) = 0.5 as well.

A richer virtual listener with an auditory model lives elsewhere; this one is the
pure psychometric function, for unit tests and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FUNCTIONS = ("logistic", "weibull")


def cdf(level, threshold, slope, function: str = "logistic"):
    """F(level): the sensory part of the psychometric function, 0.5 at ``threshold``.

    Broadcasts over numpy arrays; returns a float for scalar input.
    """
    level = np.asarray(level, dtype=float)
    if function == "logistic":
        # tanh form: numerically stable for large |z| (no overflow warnings under -W error).
        out = 0.5 * (1.0 + np.tanh(0.5 * slope * (level - threshold)))
    elif function == "weibull":
        ratio = np.maximum(level, 0.0) / threshold
        out = 1.0 - np.exp2(-(ratio**slope))
    else:
        raise ValueError(f"unknown psychometric function {function!r}; valid: {', '.join(FUNCTIONS)}")
    return float(out) if out.ndim == 0 else out


def psychometric(level, threshold, slope, false_alarm=0.0, lapse=0.0, function: str = "logistic"):
    """P(different | level) = γ + (1 − γ − λ)·F. Broadcasts over numpy arrays."""
    return false_alarm + (1.0 - false_alarm - lapse) * cdf(level, threshold, slope, function)


@dataclass(frozen=True)
class SimulatedObserver:
    """A listener whose answers follow the psychometric function exactly."""

    threshold: float
    slope: float
    false_alarm: float = 0.0
    lapse: float = 0.0
    function: str = "logistic"

    def __post_init__(self):
        if self.function not in FUNCTIONS:
            raise ValueError(f"unknown psychometric function {self.function!r}; valid: {', '.join(FUNCTIONS)}")
        if not self.slope > 0:
            raise ValueError(f"slope must be > 0, got {self.slope}")
        if self.function == "weibull" and not self.threshold > 0:
            raise ValueError(f"a Weibull observer needs threshold > 0, got {self.threshold}")
        if not (0.0 <= self.false_alarm < 1.0 and 0.0 <= self.lapse < 1.0):
            raise ValueError(f"false_alarm and lapse must lie in [0, 1), got {self.false_alarm}, {self.lapse}")
        if self.false_alarm + self.lapse >= 1.0:
            raise ValueError(
                f"false_alarm + lapse must be < 1 (else P(different) cannot rise), got {self.false_alarm + self.lapse}"
            )

    def p_different(self, level):
        return psychometric(level, self.threshold, self.slope, self.false_alarm, self.lapse, self.function)

    def respond(self, level: float, rng: np.random.Generator) -> bool:
        """One answer: True for "different"."""
        return bool(rng.random() < self.p_different(level))

    def level_at(self, p_different: float) -> float:
        """The level where P(different) = p (e.g. 0.707, the 2-down/1-up target point).

        Returns ±inf when p is outside (γ, 1 − λ): the observer never reaches it.
        """
        f = (p_different - self.false_alarm) / (1.0 - self.false_alarm - self.lapse)
        if f <= 0.0:
            return -math.inf
        if f >= 1.0:
            return math.inf
        if self.function == "logistic":
            return self.threshold + math.log(f / (1.0 - f)) / self.slope
        return self.threshold * (-math.log2(1.0 - f)) ** (1.0 / self.slope)

"""A simulated A/B listener: which of two outputs sounds closer to the clean reference?

``PsychometricABListener`` decides from the auditory-model distances of the two clips to
the clean reference (``listening_test.simulation.auditory.AuditoryModel``, the model the
simulated crowd judges JND pairs with): it prefers the one closer to clean through a
psychometric function of the log distance ratio, with internal noise (close calls are
coin flips) and lapses. ``choose(d_a, d_b, rng)`` needs only the two distances, so the
offline simulation (``se.preference.simulate_ab``) and a simulated web participant (which
fetches the three clips as bytes and can use ``DistanceCache.distance``) make the same
decision.

Needs only numpy (and math): no torch, no se, nothing of the web app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PsychometricABListener:
    """Prefers the output closer to clean, by the auditory model, with internal noise.

    With r = ln((d_a + ε) / (d_b + ε)) (positive when b is closer to clean),
    P(b) = λ/2 + (1 − λ)·Φ(r / σ). σ (``noise_sd``) is the SD of the internal log distance
    ratio: outputs whose distances differ by a factor e^σ are told apart 84% of the time
    (before lapses); λ (``lapse``) is the rate of random answers. ε (``floor``, in the
    model's distance units) keeps two near-perfect outputs a coin flip.
    """

    noise_sd: float = 0.3
    lapse: float = 0.04
    floor: float = 0.01

    def __post_init__(self):
        if not self.noise_sd > 0:
            raise ValueError(f"noise_sd must be > 0, got {self.noise_sd}")
        if not 0 <= self.lapse < 1:
            raise ValueError(f"lapse must lie in [0, 1), got {self.lapse}")
        if not self.floor > 0:
            raise ValueError(f"floor must be > 0, got {self.floor}")

    def p_prefer_b(self, d_a: float, d_b: float) -> float:
        if not (d_a >= 0 and d_b >= 0):
            raise ValueError(f"distances must be >= 0, got {d_a}, {d_b}")
        r = math.log((d_a + self.floor) / (d_b + self.floor))
        return self.lapse / 2 + (1 - self.lapse) * 0.5 * math.erfc(-r / (self.noise_sd * math.sqrt(2)))

    def choose(self, d_a: float, d_b: float, rng: np.random.Generator) -> str:
        """'a' or 'b': which output this listener says sounds closer to clean."""
        return "b" if rng.random() < self.p_prefer_b(d_a, d_b) else "a"

    def describe(self) -> str:
        return (
            f"P(prefer b) = λ/2 + (1 − λ)·Φ(ln((d_a + ε)/(d_b + ε))/σ) on the auditory-model distances "
            f"d to clean, σ = {self.noise_sd:g}, λ = {self.lapse:g}, ε = {self.floor:g}."
        )


__all__ = ["PsychometricABListener"]

"""Pair augmentations: whatever changes one side changes the other identically.

A listener's judgment is about the *difference* between two clips, so every transform
here (gain, time shift) is applied to both sides with the same parameters; only the
A/B order swap changes which side is which. Parameters are drawn from an explicit
``numpy.random.Generator`` (no global ``random``) and then applied, as in audiotools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairGain:
    """The same gain on both sides, uniform in dB."""

    min_gain_db: float = -6.0
    max_gain_db: float = 6.0

    def __post_init__(self):
        if not self.min_gain_db <= self.max_gain_db:
            raise ValueError(f"min_gain_db ({self.min_gain_db}) must not exceed max_gain_db ({self.max_gain_db})")

    def sample(self, rng: np.random.Generator) -> dict:
        return {"gain_db": float(rng.uniform(self.min_gain_db, self.max_gain_db))}

    @staticmethod
    def apply(a: np.ndarray, b: np.ndarray, gain_db: float) -> tuple[np.ndarray, np.ndarray]:
        g = np.float32(10.0 ** (gain_db / 20.0))
        return a * g, b * g


@dataclass(frozen=True)
class PairShift:
    """The same delay on both sides: ``shift_samples`` zeros in front, the tail cut."""

    max_shift_s: float = 0.05

    def __post_init__(self):
        if self.max_shift_s < 0:
            raise ValueError(f"max_shift_s must be non-negative, got {self.max_shift_s}")

    def sample(self, rng: np.random.Generator, sample_rate: int) -> dict:
        return {"shift_samples": int(rng.integers(0, int(self.max_shift_s * sample_rate) + 1))}

    @staticmethod
    def apply(a: np.ndarray, b: np.ndarray, shift_samples: int) -> tuple[np.ndarray, np.ndarray]:
        if shift_samples <= 0:
            return a, b

        def delay(x):
            return np.concatenate([np.zeros(shift_samples, np.float32), x[: max(len(x) - shift_samples, 0)]])[: len(x)]

        return delay(a), delay(b)


@dataclass(frozen=True)
class SwapAB:
    """Swap which clip is "reference" with probability ``p`` (the metric is symmetric, the data need not be)."""

    p: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {self.p}")

    def sample(self, rng: np.random.Generator) -> dict:
        return {"swap": bool(rng.random() < self.p)}

    @staticmethod
    def apply(a: np.ndarray, b: np.ndarray, swap: bool) -> tuple[np.ndarray, np.ndarray]:
        return (b, a) if swap else (a, b)


def align_pair(
    a: np.ndarray, b: np.ndarray, num_samples: int | None, offset: int | None, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop both clips to the shorter one, then cut (or zero-pad) a common window.

    ``num_samples`` None keeps the common length. ``offset`` fixes the window start;
    None draws it from ``rng`` (training) or centres it when ``rng`` is None (validation).
    """
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if num_samples is None:
        return a, b
    if n < num_samples:
        pad = num_samples - n
        return np.pad(a, (0, pad)), np.pad(b, (0, pad))
    if offset is None:
        offset = int(rng.integers(0, n - num_samples + 1)) if rng is not None else (n - num_samples) // 2
    return a[offset : offset + num_samples], b[offset : offset + num_samples]


@dataclass(frozen=True)
class PairAugment:
    """Gain, shift and swap, drawn in that order from one generator."""

    gain: PairGain | None = PairGain()
    shift: PairShift | None = PairShift()
    swap: SwapAB | None = SwapAB()

    def __call__(
        self, a: np.ndarray, b: np.ndarray, sample_rate: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.gain is not None:
            a, b = self.gain.apply(a, b, **self.gain.sample(rng))
        if self.shift is not None:
            a, b = self.shift.apply(a, b, **self.shift.sample(rng, sample_rate))
        if self.swap is not None:
            a, b = self.swap.apply(a, b, **self.swap.sample(rng))
        return a, b

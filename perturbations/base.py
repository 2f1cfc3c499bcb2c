"""The contract every perturbation family follows.

A family maps a level in [0, 100] onto physical parameters (``sample_params``),
then applies those parameters (``apply``). Sampling and applying are separate,
as in descript-audiotools, so any stimulus can be regenerated from the JSON
``params`` stored in its manifest row without re-drawing random numbers.

``__call__(audio, sample_rate, level, rng)`` is the pure function of DESIGN.md:
it returns the perturbed audio plus its physical parameters. It does not
match loudness or guard against clipping; the engine does that once for all
families (``perturbations.loudness``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL_MIN = 0.0
LEVEL_MAX = 100.0


@dataclass(frozen=True)
class Parameter:
    """One physical parameter of a family, for ``python -m perturbations list``."""

    name: str  # with its unit: snr_db, rt60_s, bitrate_kbps
    at_level_0: float | str
    at_level_100: float | str
    description: str


class Family(abc.ABC):
    """A perturbation family: a ladder from inaudible (level 0) to obvious (level 100)."""

    name: str = ""
    category: str = ""  # chains draw one family per category: noise, room, codec, filter, distortion
    description: str = ""
    parameters: tuple[Parameter, ...] = ()

    @abc.abstractmethod
    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        """Draw every random choice for ``level``; returns JSON-serialisable params."""

    @abc.abstractmethod
    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        """Apply ``params`` deterministically. Output: float32, same length, sample-aligned."""

    def __call__(
        self, audio: np.ndarray, sample_rate: int, level: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        check_level(level)
        params = self.sample_params(level, rng, sample_rate=sample_rate, num_samples=len(audio))
        return self.apply(audio, sample_rate, params), params


def check_level(level: float) -> None:
    if not (LEVEL_MIN <= float(level) <= LEVEL_MAX) or not np.isfinite(level):
        raise ValueError(f"level must lie in [{LEVEL_MIN:g}, {LEVEL_MAX:g}], got {level!r}")


def geometric(level: float, at_0: float, at_100: float) -> float:
    """Map a level geometrically onto a positive parameter, as DPAM did."""
    check_level(level)
    return float(at_0 * (at_100 / at_0) ** (level / LEVEL_MAX))


def linear(level: float, at_0: float, at_100: float) -> float:
    """Map a level linearly (a parameter already on a log scale, such as dB)."""
    check_level(level)
    return float(at_0 + (at_100 - at_0) * level / LEVEL_MAX)

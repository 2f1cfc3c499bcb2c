"""Symmetric hard clipping at a threshold relative to the clip's own peak."""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import Family, Parameter, linear
from perturbations.families import check_audio, param

THRESHOLD_AT_100_DB = -36.0


class ClippingFamily(Family):
    name = "clipping"
    category = "distortion"
    description = "Hard symmetric clipping; the threshold is relative to the clip's peak."
    parameters = (
        Parameter(
            "threshold_db",
            0.0,
            THRESHOLD_AT_100_DB,
            "clip level relative to the clip's absolute peak (dB re peak), linear in level",
        ),
    )

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        return {"threshold_db": linear(level, 0.0, THRESHOLD_AT_100_DB)}

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        threshold_db = param(params, "threshold_db", self.name, low=-120.0, high=0.0)
        # Relative to the peak so the same level means the same distortion at any gain.
        limit = max(float(audio.max()), -float(audio.min())) * 10.0 ** (threshold_db / 20.0)
        return np.clip(audio, -limit, limit)  # float32 in, float32 out

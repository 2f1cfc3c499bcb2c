"""μ-law companding followed by uniform quantisation to fewer bits (G.711-style)."""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import Family, Parameter, linear
from perturbations.families import check_audio, param

MU = 255.0
BITS_AT_0 = 16
BITS_AT_100 = 3


class MulawFamily(Family):
    name = "mulaw"
    category = "distortion"
    description = "μ-law (μ=255) companding and quantisation; fewer bits at higher levels."
    parameters = (
        Parameter(
            "bits",
            BITS_AT_0,
            BITS_AT_100,
            "bits per companded sample (sign included), linear in level and rounded; 6 dB of SNR per bit",
        ),
    )

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        return {"bits": int(round(linear(level, BITS_AT_0, BITS_AT_100)))}

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate).astype(np.float64)
        bits = param(params, "bits", self.name, low=2, high=24)
        if bits != int(bits):
            raise ValueError(f"{self.name}: bits must be an integer, got {bits!r}")
        # Full scale is 1.0; a hotter clip is scaled into range rather than clipped.
        scale = max(1.0, float(np.max(np.abs(audio))))
        x = audio / scale
        companded = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
        steps = 2.0 ** (int(bits) - 1) - 1.0  # mid-tread: zero stays zero
        quantised = np.round(companded * steps) / steps
        expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(MU)) / MU
        return (expanded * scale).astype(np.float32)

"""μ-law companding followed by uniform quantisation to fewer bits (G.711-style)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from perturbations.base import Family, Parameter, linear
from perturbations.families import check_audio, param

MU = 255.0
BITS_AT_0 = 16
BITS_AT_100 = 3
LOG1P_MU = float(np.log1p(MU))
TABLE_MAX_BITS = 16  # up to here, a cached table of the 2^bits outputs replaces expm1 per sample


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
        audio = check_audio(audio, sample_rate)
        bits = param(params, "bits", self.name, low=2, high=24)
        if bits != int(bits):
            raise ValueError(f"{self.name}: bits must be an integer, got {bits!r}")
        # Full scale is 1.0; a hotter clip is scaled into range rather than clipped.
        scale = max(1.0, float(audio.max()), -float(audio.min()))
        steps = 2.0 ** (int(bits) - 1) - 1.0  # mid-tread: zero stays zero
        # compand and quantise |x|; the law is odd, so the sign is put back at the end
        magnitude = np.abs(audio, dtype=np.float64)
        if scale != 1.0:
            magnitude /= scale
        magnitude *= MU
        np.log1p(magnitude, out=magnitude)
        magnitude /= LOG1P_MU
        magnitude *= steps
        step = np.rint(magnitude, out=magnitude)  # 0..steps
        if int(bits) > TABLE_MAX_BITS:
            expanded = _expanded(step / steps) * scale
        else:  # every step's output, from a cached table instead of expm1 per sample
            expanded = np.take(_expanded_steps(int(bits), scale == 1.0), step.astype(np.intp))
            if scale != 1.0:
                expanded *= scale
        out = expanded.astype(np.float32, copy=False)
        np.copysign(out, audio, out=out)
        out += 0.0  # step 0 of a negative sample: -0.0 -> +0.0, as the signed formula gives
        return out


def _expanded(quantised: np.ndarray) -> np.ndarray:
    """The μ-law's inverse of companded values in [-1, 1], float64."""
    return np.sign(quantised) * np.expm1(np.abs(quantised) * LOG1P_MU) / MU


@functools.lru_cache(maxsize=32)
def _expanded_steps(bits: int, as_float32: bool) -> np.ndarray:
    """The expanded output of steps 0..2^(bits-1)-1 at ``bits``, read-only. Computed with
    ``_expanded``'s float64 operations, so a lookup returns what the formula gives per sample;
    rounded to float32 when no scaling follows."""
    steps = 2.0 ** (bits - 1) - 1.0
    table = _expanded(np.arange(int(steps) + 1, dtype=np.float64) / steps)
    if as_float32:
        table = table.astype(np.float32)
    table.setflags(write=False)
    return table

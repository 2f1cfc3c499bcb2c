"""Additive noise at a signal-to-noise ratio: coloured, babble, or a user's noise folder."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perturbations.audio import AUDIO_EXTENSIONS, load_audio, resample
from perturbations.base import Family, Parameter, linear
from perturbations.families import check_audio, param
from perturbations.noises import COLORS, colored_noise

SNR_AT_0_DB = 50.0  # masked by speech at every frequency: inaudible
SNR_AT_100_DB = -10.0  # noise louder than speech


@functools.lru_cache(maxsize=64)
def _load_noise(path: str, sample_rate: int, mtime_ns: int) -> np.ndarray:
    # mtime in the key: an edited file is re-read. The noise is an ingredient,
    # so a file at another rate is resampled to the clip's rate.
    noise, rate = load_audio(path, mix_to_mono=True)
    if rate != sample_rate:
        noise = resample(noise, rate, sample_rate)
    noise.flags.writeable = False
    return noise


class NoiseFamily(Family):
    """Additive noise; ``snr_db`` is measured as power over the whole clip.

    noise_dir: folder of noise files (e.g. data/noise/ with white.wav ... babble.wav,
        or a user's own recordings); each file is a noise type named by its stem.
        Colours without a file are synthesised (``perturbations.noises``).
    noise_types: restrict the types drawn from; default: every colour plus every file.
    """

    name = "noise"
    category = "noise"
    description = "Additive white/pink/brown/blue/violet, babble or user noise at an SNR."
    parameters = (
        Parameter(
            "snr_db", SNR_AT_0_DB, SNR_AT_100_DB, "signal-to-noise power ratio over the whole clip, linear in level"
        ),
        Parameter("noise_type", "random", "random", "colour name or noise-file stem, drawn uniformly"),
    )

    def __init__(self, noise_dir: str | os.PathLike | None = None, noise_types: Sequence[str] | None = None):
        self.noise_dir = Path(noise_dir) if noise_dir is not None else None
        self.files: dict[str, Path] = {}
        if self.noise_dir is not None:
            if not self.noise_dir.is_dir():
                raise ValueError(f"noise_dir {str(self.noise_dir)!r} is not a folder")
            for path in sorted(self.noise_dir.iterdir()):
                if path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith("."):
                    self.files.setdefault(path.stem, path)
            if not self.files:
                raise ValueError(
                    f"noise_dir {str(self.noise_dir)!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                )
        available = sorted(set(COLORS) | set(self.files))
        if noise_types is None:
            noise_types = available
        if isinstance(noise_types, str):
            noise_types = (noise_types,)
        unknown = [t for t in noise_types if t not in available]
        if unknown or not noise_types:
            hint = "" if self.noise_dir else " (babble and user noises need noise_dir=...)"
            raise ValueError(
                f"unknown noise type(s) {unknown or list(noise_types)}; available: {', '.join(available)}{hint}"
            )
        self.noise_types = tuple(noise_types)

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        noise_type = self.noise_types[int(rng.integers(len(self.noise_types)))]
        params: dict[str, Any] = {"snr_db": linear(level, SNR_AT_0_DB, SNR_AT_100_DB), "noise_type": noise_type}
        if noise_type in self.files:
            path = self.files[noise_type]
            noise = _load_noise(str(path), sample_rate, path.stat().st_mtime_ns)
            params["noise_file"] = path.name
            params["offset_samples"] = int(rng.integers(len(noise)))
        else:
            params["noise_seed"] = int(rng.integers(2**63 - 1))
        return params

    def noise_for(self, params: dict[str, Any], sample_rate: int, num_samples: int) -> np.ndarray:
        """The unit-less noise excerpt that ``params`` names (before SNR scaling): a new array, which
        ``apply`` scales and mixes in place (an override must not return a shared one)."""
        if "noise_file" in params:
            if self.noise_dir is None:
                raise ValueError(
                    f"{self.name}: params name noise_file {params['noise_file']!r} but no noise_dir was given"
                )
            path = self.noise_dir / str(params["noise_file"])
            if not path.is_file():
                raise ValueError(f"{self.name}: noise file {str(path)!r} does not exist")
            noise = _load_noise(str(path), sample_rate, path.stat().st_mtime_ns)
            offset = int(param(params, "offset_samples", self.name, low=0, high=len(noise) - 1))
            # loop the file when it is shorter than the clip
            return np.take(noise, offset + np.arange(num_samples), mode="wrap")
        color = params.get("noise_type")
        if color not in COLORS:
            raise ValueError(
                f"{self.name}: noise_type {color!r} is not a colour ({', '.join(COLORS)}) and no noise_file is given"
            )
        seed = param(params, "noise_seed", self.name, low=0)
        return colored_noise(color, num_samples, np.random.default_rng(int(seed)), sample_rate=sample_rate)

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        snr_db = param(params, "snr_db", self.name, low=-60.0, high=200.0)
        noise = self.noise_for(params, sample_rate, audio.shape[0])
        signal_power = float(np.mean(np.square(audio, dtype=np.float64)))
        noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
        if signal_power <= 0.0:
            raise ValueError(f"{self.name}: the clip is silent, so no SNR can be set")
        if noise_power <= 0.0:
            raise ValueError(
                f"{self.name}: the noise excerpt is silent ({params.get('noise_file', params.get('noise_type'))})"
            )
        gain = np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
        # float32 arithmetic with float64 power sums: the SNR holds to float32 precision.
        # The excerpt is a fresh array (drawn, or np.take of a file): scaled and summed in place.
        mixed = noise.astype(np.float32, copy=False)
        mixed *= np.float32(gain)
        mixed += audio
        return mixed

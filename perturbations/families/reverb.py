"""Reverberation: simulated shoebox rooms (pyroomacoustics) or a user's RIR folder.

Room model. pyroomacoustics' pure image-source method (ISM) overshoots its Sabine
target (measured T30-based RT60 ≈ 1.25x target at 0.6-1.0 s) and its cost grows
with the cube of the reflection order (1.5 s of CPU for one 1 s RIR at 16 kHz).
The hybrid model (ISM to order 3 + ray tracing, scattering 0.1) lands within
~10 % of the target and costs 0.03-0.2 s per RIR at any RT60, so it is used here.
Ray tracing draws from pyroomacoustics' package-global generators (numpy and the
C++ ``libroom`` Mersenne Twister), so every RIR is computed under a lock right
after ``pra.random.seed(rir_seed)``: the RIR is a pure function of its params.
RIRs are cached (``functools.lru_cache``) on the room params; rooms come from a
small fixed bank so that a ladder reuses them. The measured RT60 of each RIR is
stored in ``rt60_s`` (Schroeder backward integration, T30 extrapolated to 60 dB).

Alignment and strength. The direct sound (±2.5 ms around the direct-path peak) is
replaced by a unit impulse at lag 0, so the output is sample-aligned with and as
loud as the input, and the reverberant tail is scaled to hit ``drr_db`` exactly;
the tail is truncated at the clip's length. The shaped RIR is cached per room and DRR
(it does not depend on the clip) and the convolution runs in float32, as the output is.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from perturbations.audio import AUDIO_EXTENSIONS, load_audio, resample
from perturbations.base import Family, Parameter, geometric, linear
from perturbations.families import check_audio, param

RT60_AT_0_S = 0.2
RT60_AT_100_S = 1.5
DRR_AT_0_DB = 40.0  # tail 40 dB below the direct sound: inaudible
DRR_AT_100_DB = -5.0
DIRECT_HALF_WINDOW_S = 0.0025  # the usual ±2.5 ms "direct" window of DRR
SCATTERING = 0.1
ROOM_BANK = (  # (dims_m, source_m, mic_m); every room reaches RT60 0.2 s with absorption < 1
    ((4.0, 3.5, 2.7), (1.2, 1.5, 1.5), (2.6, 2.2, 1.4)),
    ((5.0, 4.0, 3.0), (1.5, 2.8, 1.6), (3.4, 1.9, 1.5)),
    ((6.0, 5.0, 3.0), (2.0, 3.0, 1.5), (4.0, 2.0, 1.5)),
    ((7.0, 5.5, 3.2), (2.5, 1.5, 1.7), (4.6, 3.1, 1.4)),
    ((8.0, 6.0, 3.5), (3.0, 4.0, 1.6), (5.2, 3.2, 1.5)),
    ((4.5, 4.0, 2.8), (3.3, 1.2, 1.5), (1.6, 2.4, 1.6)),
)
_PRA_LOCK = threading.Lock()


def measure_rt60_s(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 by Schroeder backward integration: the -5..-35 dB decay (T30) extrapolated to 60 dB."""
    energy = np.cumsum(np.square(rir[::-1], dtype=np.float64))[::-1]
    if energy[0] <= 0:
        raise ValueError("cannot measure RT60 of an all-zero impulse response")
    with np.errstate(divide="ignore"):
        edc_db = 10.0 * np.log10(energy / energy[0])
    start, stop = np.argmax(edc_db <= -5.0), np.argmax(edc_db <= -35.0)
    if stop <= start:
        raise ValueError("impulse response decays less than 35 dB; RT60 (T30) cannot be measured")
    t = np.arange(start, stop) / sample_rate
    slope_db_per_s = np.polyfit(t, edc_db[start:stop], 1)[0]
    return float(-60.0 / slope_db_per_s)


def direct_index(rir: np.ndarray, sample_rate: int, expected: int | None = None) -> int:
    """Index of the direct-path peak: the largest |h| up to 2.5 ms after the expected arrival."""
    search_end = len(rir) if expected is None else min(len(rir), expected + int(DIRECT_HALF_WINDOW_S * sample_rate) + 1)
    return int(np.argmax(np.abs(rir[:search_end])))


@functools.lru_cache(maxsize=256)
def shoebox_rir(
    sample_rate: int, rt60_target_s: float, dims_m: tuple, source_m: tuple, mic_m: tuple, rir_seed: int
) -> tuple[np.ndarray, int, float]:
    """(rir, direct-path index, measured RT60 in s) for one hybrid-simulated room. Cached."""
    import pyroomacoustics as pra

    e_absorption, _ = pra.inverse_sabine(rt60_target_s, list(dims_m))
    with _PRA_LOCK:
        room = pra.ShoeBox(
            list(dims_m),
            fs=sample_rate,
            materials=pra.Material(e_absorption, SCATTERING),
            max_order=3,
            ray_tracing=True,
            air_absorption=False,
        )
        room.set_ray_tracing()
        room.add_source(list(source_m))
        room.add_microphone(list(mic_m))
        pra.random.seed(numpy=rir_seed, libroom=rir_seed)  # ray tracing uses the global generators
        room.compute_rir()
        rir = np.array(room.rir[0][0], dtype=np.float64)
    distance = float(np.linalg.norm(np.subtract(source_m, mic_m)))
    offset = pra.constants.get("frac_delay_length") // 2  # pyroomacoustics' fractional-delay centring
    expected = int(round(distance / room.c * sample_rate)) + offset
    rir.flags.writeable = False
    return rir, direct_index(rir, sample_rate, expected), measure_rt60_s(rir, sample_rate)


@functools.lru_cache(maxsize=64)
def file_rir(path: str, sample_rate: int, mtime_ns: int) -> tuple[np.ndarray, int, float]:
    """(rir, direct-path index, measured RT60 in s) of a user's RIR file, resampled to ``sample_rate``."""
    rir, rate = load_audio(path, mix_to_mono=True)
    rir = resample(rir, rate, sample_rate, dtype=np.float64)  # a float64 copy at equal rates
    rir.flags.writeable = False
    return rir, direct_index(rir, sample_rate), measure_rt60_s(rir, sample_rate)


def shape_rir(rir: np.ndarray, direct: int, sample_rate: int, drr_db: float) -> np.ndarray:
    """Unit impulse at index ``direct`` plus the tail (outside ±2.5 ms) scaled to ``drr_db``."""
    half = int(round(DIRECT_HALF_WINDOW_S * sample_rate))
    tail = rir.copy()
    tail[max(0, direct - half) : direct + half + 1] = 0.0
    tail_energy = float(np.sum(tail**2))
    if tail_energy <= 0.0:
        raise ValueError("the impulse response has no reverberant tail outside the ±2.5 ms direct window")
    shaped = tail * np.sqrt(10.0 ** (-drr_db / 10.0) / tail_energy)  # direct energy is 1
    shaped[direct] = 1.0
    return shaped


def _rir_for_key(key: tuple) -> tuple[np.ndarray, int, float]:
    """(rir, direct-path index, measured RT60 in s) for a key from ``ReverbFamily._rir_key``."""
    if key[0] == "file":
        return file_rir(*key[1:])
    try:
        return shoebox_rir(*key[1:])
    except ValueError as error:  # e.g. pyroomacoustics: absorption > 1 for this room
        raise ValueError(f"{ReverbFamily.name}: cannot simulate this room: {error}") from None


@functools.lru_cache(maxsize=64)
def _shaped_rir(key: tuple, drr_db: float) -> tuple[np.ndarray, int]:
    """The RIR of ``key`` shaped to ``drr_db`` (``shape_rir``) and its direct index. Cached: it does
    not depend on the clip, and every reference of a set meets the same rooms at the same levels."""
    rir, direct, _ = _rir_for_key(key)
    # shaped in float64, kept in float32: the convolution runs in float32 (relative error ~3e-7,
    # -130 dB, the size of the float32 output's own rounding) at half the cost of float64
    shaped = shape_rir(rir, direct, key[2] if key[0] == "file" else key[1], drr_db).astype(np.float32)
    shaped.flags.writeable = False
    return shaped, direct


class ReverbFamily(Family):
    """Reverberation; ``rir_dir`` switches from simulated rooms to a folder of RIR files."""

    name = "reverb"
    category = "room"
    description = "Room reverberation (pyroomacoustics hybrid shoebox or user RIRs), direct path at lag 0."
    parameters = (
        Parameter(
            "rt60_target_s",
            RT60_AT_0_S,
            RT60_AT_100_S,
            "target reverberation time, geometric in level (simulated rooms)",
        ),
        Parameter("rt60_s", "measured", "measured", "RT60 measured on the RIR actually used (Schroeder, T30)"),
        Parameter("drr_db", DRR_AT_0_DB, DRR_AT_100_DB, "direct-to-reverberant energy ratio, linear in level"),
    )

    def __init__(self, rir_dir: str | os.PathLike | None = None):
        self.rir_dir = Path(rir_dir) if rir_dir is not None else None
        self.rir_files: tuple[str, ...] = ()
        if self.rir_dir is not None:
            if not self.rir_dir.is_dir():
                raise ValueError(f"rir_dir {str(self.rir_dir)!r} is not a folder")
            self.rir_files = tuple(
                sorted(
                    p.name
                    for p in self.rir_dir.iterdir()
                    if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
                )
            )
            if not self.rir_files:
                raise ValueError(f"rir_dir {str(self.rir_dir)!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")

    def _rir(self, params: dict[str, Any], sample_rate: int) -> tuple[np.ndarray, int, float]:
        return _rir_for_key(self._rir_key(params, sample_rate))

    def _rir_key(self, params: dict[str, Any], sample_rate: int) -> tuple:
        """What the RIR of ``params`` depends on (hashable); raises ValueError for bad params."""
        kind = params.get("rir") if isinstance(params, dict) else None
        if kind == "file":
            if self.rir_dir is None:
                raise ValueError(f"{self.name}: params name an RIR file but no rir_dir was given")
            path = self.rir_dir / str(params.get("rir_file"))
            if not path.is_file():
                raise ValueError(f"{self.name}: RIR file {str(path)!r} does not exist")
            return ("file", str(path), int(sample_rate), path.stat().st_mtime_ns)
        if kind == "shoebox":
            try:
                geometry = tuple(tuple(float(v) for v in params[k]) for k in ("room_dims_m", "source_m", "mic_m"))
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{self.name}: shoebox params need room_dims_m, source_m and mic_m as 3 numbers each"
                ) from None
            if any(len(g) != 3 for g in geometry):
                raise ValueError(f"{self.name}: room_dims_m, source_m and mic_m need 3 numbers each")
            rt60 = param(params, "rt60_target_s", self.name, low=0.05, high=10.0)
            seed = int(param(params, "rir_seed", self.name, low=0))
            return ("shoebox", int(sample_rate), rt60, *geometry, seed)
        raise ValueError(f"{self.name}: params['rir'] must be 'shoebox' or 'file', got {kind!r}")

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        drr_db = linear(level, DRR_AT_0_DB, DRR_AT_100_DB)
        if self.rir_dir is not None:
            params: dict[str, Any] = {"rir": "file", "rir_file": self.rir_files[int(rng.integers(len(self.rir_files)))]}
        else:
            room_id = int(rng.integers(len(ROOM_BANK)))
            dims, source, mic = ROOM_BANK[room_id]
            params = {
                "rir": "shoebox",
                "rt60_target_s": geometric(level, RT60_AT_0_S, RT60_AT_100_S),
                "room_dims_m": list(dims),
                "source_m": list(source),
                "mic_m": list(mic),
                "rir_seed": room_id,
            }
        params["rt60_s"] = self._rir(params, sample_rate)[2]
        params["drr_db"] = drr_db
        return params

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        drr_db = param(params, "drr_db", self.name, low=-40.0, high=120.0)
        shaped, direct = _shaped_rir(self._rir_key(params, sample_rate), drr_db)
        n = audio.shape[0]
        # only the part of the RIR that can reach the kept samples matters
        wet = fftconvolve(audio, shaped[: direct + n])  # float32 in, float32 out
        return wet[direct : direct + n].astype(np.float32)

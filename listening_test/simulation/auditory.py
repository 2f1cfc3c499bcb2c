"""A small auditory model: the internal perceptual distance a virtual listener decides on.

What it computes, for two mono clips presented at a calibrated level (dB SPL):

1. **Peripheral filtering.** A 4th-order gammatone filterbank (Patterson/Holdsworth),
   ``n_bands`` channels spaced evenly on the ERB-number scale (Glasberg & Moore 1990),
   bandwidth 1.019 ERB. Each channel is implemented as a frequency shift to DC followed
   by four cascaded one-pole complex low-pass filters, so its output magnitude is the
   channel's Hilbert envelope (no FFT/STFT anywhere).
2. **Temporal integration.** The envelope power is averaged over ``frame_s`` frames:
   the band intensity I (in units of (20 µPa)², so 10·log10 I is dB SPL).
3. **Internal noise / threshold in quiet.** Terhardt's (1979) approximation of the
   absolute threshold, evaluated at each channel's centre frequency, is added as an
   internal noise intensity Q: sounds far below it contribute nothing.
4. **Compression.** Specific-loudness-like power law: N = (I + Q)^α − Q^α, α = 0.3
   (Zwicker/Stevens compression).
5. **Masking threshold.** What the two clips have in common, min(I_a, I_b), is the
   masker. It is spread across channels (upward spread of masking: shallow slope
   towards higher frequencies, steep towards lower ones, in dB per ERB) and over time
   (forward masking: the masker decays exponentially after it stops). A difference in
   compressed excitation is detectable only where it exceeds a Weber fraction of the
   compressed masker-plus-noise: θ = w·(M + Q)^α, with w set by a 1 dB intensity JND.
6. **Accumulation.** The supra-threshold difference, in multiples of θ,
   S = max(0, |N_a − N_b| / θ − 1), is pooled over channels (Minkowski, ``band_pool``)
   and then over frames (power mean, ``time_pool``). The result is a non-negative
   number, 0 for identical clips, in rough "JND units".

Why it is not one of the analysis baselines (waveform L1/L2, log-mel L1, multi-
resolution STFT, PESQ, STOI, ViSQOL, SI-SDR): it never compares waveforms or STFT/mel
magnitudes; it works on gammatone excitation in dB SPL with an absolute threshold,
compressive nonlinearity, across-channel and forward masking and a dead zone below the
masking threshold, none of which those metrics have. A learned metric cannot score well
against these listeners by re-learning a baseline.

The model is symmetric in its two inputs (a listener does not know which clip is the
reference), d(x, x) = 0 exactly, and it is deterministic. Everything is numpy/scipy.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

#: dB SPL of a full-scale (RMS = 1) signal when a listener has not set the volume.
DEFAULT_FULL_SCALE_DB_SPL = 93.0


def erb_number(f_hz):
    """Glasberg & Moore (1990) ERB-number (Cams) of a frequency."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(f_hz, float))


def erb_number_to_hz(cams):
    return (10.0 ** (np.asarray(cams, float) / 21.4) - 1.0) / 0.00437


def erb_hz(f_hz):
    """Equivalent rectangular bandwidth at ``f_hz``."""
    return 24.7 * (1.0 + 0.00437 * np.asarray(f_hz, float))


def threshold_in_quiet_db(f_hz):
    """Terhardt (1979): absolute threshold of hearing in dB SPL (f in Hz)."""
    f = np.maximum(np.asarray(f_hz, float), 20.0) / 1000.0
    return 3.64 * f**-0.8 - 6.5 * np.exp(-0.6 * (f - 3.3) ** 2) + 1e-3 * f**4


@dataclass(frozen=True)
class AuditoryModel:
    """Gammatone excitation-pattern difference with compression and masking (see module doc)."""

    n_bands: int = 32
    f_min_hz: float = 80.0
    f_max_hz: float = 8000.0  # capped at 0.45 × the sample rate
    frame_s: float = 0.010
    compression: float = 0.3  # α of N = (I + Q)^α − Q^α
    intensity_jnd_db: float = 1.0  # Weber fraction of the masking threshold
    spread_up_db_per_erb: float = 12.0  # masker → higher channels (upward spread)
    spread_down_db_per_erb: float = 27.0  # masker → lower channels
    forward_masking_tau_s: float = 0.03
    band_pool: float = 2.0
    time_pool: float = 2.0

    def __post_init__(self):
        if self.n_bands < 2:
            raise ValueError("n_bands must be >= 2")
        if not 0 < self.compression <= 1:
            raise ValueError("compression must be in (0, 1]")
        if not 0 < self.f_min_hz < self.f_max_hz:
            raise ValueError("need 0 < f_min_hz < f_max_hz")
        if self.frame_s <= 0 or self.forward_masking_tau_s <= 0:
            raise ValueError("frame_s and forward_masking_tau_s must be > 0")

    def config(self) -> dict:
        return asdict(self)

    # -- periphery ---------------------------------------------------------------------

    def centre_frequencies(self, sample_rate: int) -> np.ndarray:
        top = min(self.f_max_hz, 0.45 * sample_rate)
        cams = np.linspace(erb_number(self.f_min_hz), erb_number(top), self.n_bands)
        return erb_number_to_hz(cams)

    def band_intensity(self, audio: np.ndarray, sample_rate: int, level_db_spl: float) -> np.ndarray:
        """Gammatone band intensities, shape (bands, frames), in (20 µPa)² units.

        ``level_db_spl``: the presentation level of a full-scale RMS = 1 signal.
        """
        x = np.asarray(audio, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected mono audio of shape (samples,), got {x.shape}")
        hop = max(1, int(round(self.frame_s * sample_rate)))
        n_frames = max(1, len(x) // hop)
        x = x[: n_frames * hop] if len(x) >= hop else np.pad(x, (0, hop - len(x)))
        x = x * 10.0 ** (level_db_spl / 20.0)
        cf = self.centre_frequencies(sample_rate)
        t = np.arange(len(x)) / sample_rate
        # Shift each channel's centre frequency to DC, then 4 one-pole complex low-passes.
        y = x[None, :] * np.exp(-2j * np.pi * cf[:, None] * t[None, :])
        out = np.empty((len(cf), len(x)), dtype=np.complex128)
        for i, bw in enumerate(1.019 * erb_hz(cf)):
            a = math.exp(-2.0 * math.pi * bw / sample_rate)
            # (1 - a)^4 / (1 - a z^-1)^4: four cascaded one-pole stages in one call.
            out[i] = lfilter([(1.0 - a) ** 4], [1.0, -4 * a, 6 * a**2, -4 * a**3, a**4], y[i])
        # A tone A·cos at the centre frequency gives |y| = A/2; its intensity is A²/2.
        power = 2.0 * (out.real**2 + out.imag**2)
        return power.reshape(len(cf), n_frames, hop).mean(axis=2)

    # -- central processing --------------------------------------------------------------

    def _noise(self, sample_rate: int) -> np.ndarray:
        return 10.0 ** (threshold_in_quiet_db(self.centre_frequencies(sample_rate)) / 10.0)[:, None]

    def _spread(self, intensity: np.ndarray, sample_rate: int) -> np.ndarray:
        cams = erb_number(self.centre_frequencies(sample_rate))
        delta = cams[:, None] - cams[None, :]  # target channel minus masker channel
        slope = np.where(delta >= 0, self.spread_up_db_per_erb, self.spread_down_db_per_erb)
        weights = 10.0 ** (-slope * np.abs(delta) / 10.0)
        # Masking adds up within a channel's neighbourhood but the channel itself dominates:
        # the maximum over maskers keeps the spread pattern from inflating broadband sounds.
        return np.max(weights[:, :, None] * intensity[None, :, :], axis=1)

    def _forward_mask(self, masker: np.ndarray) -> np.ndarray:
        decay = math.exp(-self.frame_s / self.forward_masking_tau_s)
        out = masker.copy()
        for t in range(1, out.shape[1]):
            np.maximum(out[:, t], out[:, t - 1] * decay, out=out[:, t])
        return out

    def compare_intensities(self, ia: np.ndarray, ib: np.ndarray, sample_rate: int) -> np.ndarray:
        """Supra-threshold difference S (bands, frames) between two band-intensity patterns."""
        n = min(ia.shape[1], ib.shape[1])
        ia, ib = ia[:, :n], ib[:, :n]
        q = self._noise(sample_rate)
        alpha = self.compression
        na = (ia + q) ** alpha - q**alpha
        nb = (ib + q) ** alpha - q**alpha
        masker = self._forward_mask(self._spread(np.minimum(ia, ib), sample_rate))
        weber = 10.0 ** (alpha * self.intensity_jnd_db / 10.0) - 1.0
        theta = weber * (masker + q) ** alpha
        return np.maximum(0.0, np.abs(na - nb) / theta - 1.0)

    def pool(self, s: np.ndarray) -> float:
        per_frame = np.sum(s**self.band_pool, axis=0) ** (1.0 / self.band_pool)
        return float(np.mean(per_frame**self.time_pool) ** (1.0 / self.time_pool))

    def distance(
        self, a: np.ndarray, b: np.ndarray, sample_rate: int, level_db_spl: float = DEFAULT_FULL_SCALE_DB_SPL
    ) -> float:
        """The internal perceptual distance between clips ``a`` and ``b`` (symmetric, ≥ 0)."""
        ia = self.band_intensity(a, sample_rate, level_db_spl)
        ib = self.band_intensity(b, sample_rate, level_db_spl)
        return self.pool(self.compare_intensities(ia, ib, sample_rate))


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Bytes of an audio file (as fetched by a browser) → float32 array and sample rate.

    Mono files give shape (samples,); stereo (screening) files give (samples, 2).
    """
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return audio, int(rate)


class DistanceCache:
    """Thread-safe memo of band intensities per clip and distances per clip pair.

    Keys are content hashes of the bytes given. The server dithers every delivery (unique
    bytes per clip, ``listening_test.web.audio``), so the client hands in the stimulus
    file's own bytes for each clip ``StimulusIndex`` recognises; then a crowd of 30
    listeners computes each (reference, stimulus, presentation level) distance once.
    """

    def __init__(self, model: AuditoryModel | None = None, max_clips: int = 4096):
        self.model = model or AuditoryModel()
        self._lock = threading.Lock()
        self._intensity: dict[tuple[str, float], tuple[np.ndarray, int]] = {}
        self._distance: dict[tuple[str, str, float], float] = {}
        self._pending: dict[tuple, threading.Event] = {}
        self.max_clips = max_clips
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    def _once(self, store: dict, key, compute):
        """Compute ``store[key]`` once even when several threads ask at the same time."""
        while True:
            with self._lock:
                if key in store:
                    self.hits += 1
                    return store[key]
                event = self._pending.get(key)
                if event is None:
                    event = self._pending[key] = threading.Event()
                    owner = True
                else:
                    owner = False
            if not owner:
                event.wait(timeout=120)
                continue
            try:
                value = compute()
                with self._lock:
                    self.misses += 1
                    if len(store) >= self.max_clips:
                        store.pop(next(iter(store)))
                    store[key] = value
                return value
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                event.set()

    def intensity(self, data: bytes, level_db_spl: float) -> tuple[np.ndarray, int]:
        def compute():
            audio, rate = decode_wav(data)
            if audio.ndim > 1:
                audio = audio.mean(axis=1)
            return self.model.band_intensity(audio, rate, level_db_spl), rate

        return self._once(self._intensity, (self.key(data), round(level_db_spl, 1)), compute)

    def distance(self, a: bytes, b: bytes, level_db_spl: float = DEFAULT_FULL_SCALE_DB_SPL) -> float:
        ka, kb = sorted((self.key(a), self.key(b)))
        if ka == kb:
            return 0.0

        def compute():
            ia, ra = self.intensity(a, level_db_spl)
            ib, rb = self.intensity(b, level_db_spl)
            if ra != rb:
                raise ValueError(f"the two clips have different sample rates ({ra} and {rb} Hz)")
            return self.model.pool(self.model.compare_intensities(ia, ib, ra))

        return self._once(self._distance, (ka, kb, round(level_db_spl, 1)), compute)

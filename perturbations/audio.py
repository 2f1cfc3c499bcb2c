"""Audio file I/O, validation and resampling shared by every jndlab package.

All file I/O goes through soundfile. Inside the code audio is float32, mono,
shape ``(samples,)``; the sample rate always travels beside it explicitly.
Resampling (``resample``) happens only where a caller asks for it.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from perturbations.files import atomic_write_bytes

SUPPORTED_SAMPLE_RATES = (16000, 22050, 44100, 48000)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# Below this RMS (about -100 dBFS) a clip is treated as digital silence.
SILENCE_RMS = 1e-5


class AudioError(ValueError):
    """A file that cannot be used as audio. The message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_audio(
    path: str | os.PathLike, *, sample_rate: int | None = None, mix_to_mono: bool = False, allow_silent: bool = False
) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono and check that it is usable.

    ``sample_rate``: when given, a file at any other rate raises ``AudioError``
    (resampling happens only where a caller asks for it).
    ``mix_to_mono``: average the channels of a multichannel file instead of rejecting it.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file does not exist")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(path, f"not readable as audio ({error})") from None
    if audio.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    if audio.shape[1] > 1:
        if not mix_to_mono:
            raise AudioError(path, f"has {audio.shape[1]} channels; jndlab expects mono")
        audio = audio.mean(axis=1, keepdims=True)
    audio = np.ascontiguousarray(audio[:, 0], dtype=np.float32)
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(path, f"sample rate is {rate} Hz, expected {sample_rate} Hz")
    if not np.all(np.isfinite(audio)):
        raise AudioError(path, "contains NaN or infinite samples")
    if not allow_silent and float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SILENCE_RMS:
        raise AudioError(path, "is silent (RMS below -100 dBFS)")
    return audio, int(rate)


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, subtype: str = "FLOAT") -> Path:
    """Write mono ``audio`` (float32, shape ``(samples,)``, at ``sample_rate`` Hz) atomically to ``path``.

    A temporary file in the same folder, then a rename (``files.atomic_write_bytes``): a
    process killed mid-write never leaves a half-written file under ``path``.
    ``subtype``: ``"FLOAT"`` (float32), ``"PCM_16"`` or ``"PCM_24"``; the format follows the
    suffix (``.wav``, ``.flac`` ...). The file is encoded in memory (``encode_audio``) and
    written in one go without fsync: libsndfile writing to a file fsyncs it on close,
    10-20 ms per stimulus on a busy disk, and the generate journal checks every stimulus's
    sha256 on resume, so a file lost to a power cut is redone.

    Raises ``ValueError`` for non-mono or non-finite audio (nothing is written) and
    ``OSError`` when the file cannot be written.
    """
    path = Path(path)
    atomic_write_bytes(
        path, encode_audio(audio, sample_rate, subtype=subtype, fmt=audio_format(path), name=path), fsync=False
    )
    return path


def encode_audio(
    audio: np.ndarray, sample_rate: int, *, subtype: str = "FLOAT", fmt: str = "WAV", name: str | os.PathLike = "audio"
) -> bytes:
    """The bytes ``save_audio`` writes: mono ``audio`` (shape (samples,)) as ``fmt`` (WAV, FLAC, ...).

    Byte-stable: the same audio gives the same bytes (no PEAK chunk time stamp).
    Raises ValueError (naming ``name``) for non-mono or non-finite audio.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"{name}: expected mono audio of shape (samples,), got {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name}: refusing to write NaN or infinite samples")
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=sample_rate, channels=1, subtype=subtype, format=fmt) as handle:
        disable_peak_chunk(handle)
        handle.write(audio)
    return buffer.getvalue()


def audio_format(path: str | os.PathLike) -> str:
    """The soundfile format ``save_audio`` writes for ``path``: its suffix upper-cased (``WAV`` without one)."""
    return Path(path).suffix.lstrip(".").upper() or "WAV"


def resample(
    audio: np.ndarray, sample_rate_from: int, sample_rate_to: int, *, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """``audio`` (shape ``(samples,)`` or ``(batch, samples)``) resampled from ``sample_rate_from``
    to ``sample_rate_to`` Hz along its last axis; ``dtype`` out (float32 by default; float64
    for filters such as room impulse responses, or float64 pipelines).

    Polyphase filtering (``scipy.signal.resample_poly``, Kaiser window, beta 5) by the
    reduced ratio ``to/from``, computed in float64. Deterministic and bit-exact run to run
    (torch kernels may change their summation order with the thread count). The output has
    ``ceil(samples * to / from)`` samples. Equal rates return an unchanged copy.

    Raises ``ValueError`` for a rate that is not a positive integer.
    Source: scipy.signal.resample_poly (Crochiere & Rabiner, Multirate DSP, 1983).
    """
    for rate in (sample_rate_from, sample_rate_to):
        if int(rate) != rate or rate <= 0:
            raise ValueError(
                f"sample rates must be positive integers in Hz, got {sample_rate_from} -> {sample_rate_to}"
            )
    rate_from, rate_to = int(sample_rate_from), int(sample_rate_to)
    if rate_from == rate_to:
        return np.array(audio, dtype=dtype)
    from scipy.signal import resample_poly

    common = math.gcd(rate_from, rate_to)
    out = resample_poly(np.asarray(audio, dtype=np.float64), rate_to // common, rate_from // common, axis=-1)
    return out.astype(dtype, copy=False)


def disable_peak_chunk(handle: sf.SoundFile) -> None:
    """Switch off the PEAK chunk of ``handle`` (a soundfile opened for writing, before any write).

    Float WAVs get a PEAK chunk that holds the write time: the same audio would give
    different bytes (and sha256) a second later. libsndfile's SFC_SET_ADD_PEAK_CHUNK command
    (sndfile.h) turns it off. Raises nothing: with a soundfile lacking these internals the
    file stays valid, only not byte-stable."""
    sfc_set_add_peak_chunk = 0x1050  # libsndfile's sndfile.h
    try:
        sf._snd.sf_command(handle._file, sfc_set_add_peak_chunk, sf._ffi.NULL, 0)
    except AttributeError:  # a soundfile without these internals: output stays valid, not byte-stable
        pass


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))

"""Audio file I/O and validation shared by every jndlab package.

All file I/O goes through soundfile. Inside the code audio is float32, mono,
shape ``(samples,)``; the sample rate always travels beside it explicitly.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

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
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    mix_to_mono: bool = False,
    allow_silent: bool = False,
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


def save_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "FLOAT",
) -> Path:
    """Write mono ``audio`` atomically: a temporary file in the same folder, then a rename.

    A process killed mid-write never leaves a half-written file under ``path``.
    ``subtype``: ``"FLOAT"`` (float32) or ``"PCM_16"``; the format follows the suffix.
    The file is encoded in memory (``encode_audio``) and written in one go: libsndfile
    writing to a file fsyncs it on close, 10-20 ms per stimulus on a busy disk.
    """
    path = Path(path)
    write_bytes_atomic(path, encode_audio(audio, sample_rate, subtype=subtype, fmt=_format_of(path), name=path))
    return path


def encode_audio(audio: np.ndarray, sample_rate: int, *, subtype: str = "FLOAT", fmt: str = "WAV",
                 name: str | os.PathLike = "audio") -> bytes:
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
        _disable_peak_chunk(handle)
        handle.write(audio)
    return buffer.getvalue()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _format_of(path: Path) -> str:
    return path.suffix.lstrip(".").upper() or "WAV"


def _disable_peak_chunk(handle: sf.SoundFile) -> None:
    """Float WAVs get a PEAK chunk that holds the write time: the same audio would give
    different bytes (and sha256) a second later. Switch it off (SFC_SET_ADD_PEAK_CHUNK)."""
    sfc_set_add_peak_chunk = 0x1050  # libsndfile's sndfile.h
    try:
        sf._snd.sf_command(handle._file, sfc_set_add_peak_chunk, sf._ffi.NULL, 0)
    except AttributeError:  # a soundfile without these internals: output stays valid, not byte-stable
        pass


class atomic_path:
    """Context manager that yields a temporary path next to ``path`` and renames it on success."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))

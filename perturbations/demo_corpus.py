"""Build the demo corpus in ``data/``: real speech, espeak-ng speech and synthetic noises.

Called at set-up by ``python -m perturbations demo-corpus --out data``. Everything is built
from Debian packages and code, so the repository commits no third-party audio:

- ``speech/``: 2–4 s clips at 16 kHz, trimmed of leading and trailing silence and normalised
  to -23 LUFS (ITU-R BS.1770 via pyloudnorm). Real recordings come from ``pocketsphinx-testdata``
  (public-domain LibriVox and other 16 kHz recordings), cut at low-energy points; synthetic ones
  are sentences written for jndlab, spoken by several espeak-ng voices.
- ``noise/``: white, pink, brown, blue and violet noise (``perturbations.noises``) and babble
  mixed from espeak-ng talkers at seeded random offsets.
- ``corpus.csv``: one row per file (path, kind, source, duration_s, sample_rate, loudness_lufs).
- ``.corpus-complete``: written last, so an interrupted build is redone by the set-up script.

Files are written atomically and as PCM_16, and the build is deterministic: two builds with the
same espeak-ng version give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyloudnorm
import soundfile as sf
from tqdm import tqdm

from perturbations.audio import resample, save_audio
from perturbations.files import atomic_path, atomic_write_text
from perturbations.noises import COLORS, colored_noise

SAMPLE_RATE = 16000
TARGET_LUFS = -23.0
PEAK_LIMIT_DBFS = -1.0
# Speech at -23 LUFS peaks 4-9 dB below full scale. A clip peaking above -3 dBFS leaves the
# stimulus ladder no headroom: its loudness-matched EQ and 8 kbps MP3 versions would clip
# (perturbations.stimulus.HeadroomError), so such clips are left out.
SPEECH_PEAK_MAX_DBFS = -3.0
CLIP_MIN_S = 2.0
CLIP_MAX_S = 4.0
NOISE_DURATION_S = 25.0
SEED = 20200707  # fixed: the corpus is part of the set-up, not an experiment

COMPLETE_MARKER = ".corpus-complete"
CSV_COLUMNS = ("path", "kind", "source", "duration_s", "sample_rate", "loudness_lufs")

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
# 16 kHz recordings in pocketsphinx-testdata; the .raw files are headerless s16le mono
RECORDING_GLOBS = ("librivox/*.wav", "cards/*.wav", "*.raw", "tidigits/*.raw")
ESPEAK = "espeak-ng"
ESPEAK_SAMPLE_RATE = 22050

# Energy analysis for trimming and cutting: 20 ms frames every 10 ms.
FRAME_S = 0.020
HOP_S = 0.010
# A frame is speech when it is within 35 dB of the loudest frame and 10 dB above the floor
# (10th percentile): the recordings have a noise floor near -50 dBFS, so a threshold
# relative to the peak alone would keep their silent lead-in.
SPEECH_BELOW_PEAK_DB = 35.0
SPEECH_ABOVE_FLOOR_DB = 10.0
TRIM_MARGIN_S = 0.010  # keep a little before the onset and after the offset
CUT_SMOOTH_S = 0.100  # cut where 100 ms of energy is lowest: a pause, not a stop closure

# Sentences written for jndlab (Harvard-sentence style), free of third-party rights.
# Each espeak-ng voice speaks two of them.
SENTENCES = (
    "The red kite drifted high above the quiet harbour at noon.",
    "Bring the copper kettle to a slow boil before you add the tea.",
    "A thin layer of frost covered the garden gate this morning.",
    "Her old bicycle leaned against the bakery wall all afternoon.",
    "The clock in the long hall struck nine just after dawn.",
    "Pack the blue glass jars carefully in the wooden crate.",
    "The small ferry left the pier an hour before the storm.",
    "Four little boats rocked gently on the calm green lake.",
    "He wrote the long letter slowly with a dull pencil.",
    "The smell of fresh bread filled the narrow street by six.",
    "Stack the heavy books on the shelf near the open window.",
    "A warm breeze carried the sharp scent of pine down the valley.",
    "The choir sang softly in the old stone chapel on the hill.",
    "Turn the brass key twice to lock the back door at night.",
    "The puppy chased a yellow leaf across the wet lawn.",
    "Tall reeds bent low in the cold wind from the river.",
)
# espeak-ng's own voices and variants (no MBROLA voices, which need extra packages)
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en+f3", "en-us+m2", "en-gb-x-rp+f4", "en-us-nyc")

# Babble: six talkers, each reading different sentences from the speech clips above.
BABBLE_VOICES = ("en-us+m3", "en-gb+f2", "en-029+m1", "en-gb-scotland+f5", "en-us+f1", "en-gb-x-rp+m4")
BABBLE_TEXTS = (
    "The farmer sold his apples at the market. Rain fell on the tin roof all night. "
    "Send the parcel by the early train.",
    "A gull cried over the grey water. The lamp flickered and went out. We walked home along the dusty lane.",
    "Paint the fence a pale shade of green. The baker rose long before the sun. Keep the map dry inside your coat.",
    "The old dog slept beside the fire. Snow covered the hills by morning. Fold the napkins and set the table.",
    "The hikers rested under a broad oak. Cold tea tastes bitter after noon. The shop closed early on Sunday.",
    "The horse trotted down the gravel path. Lift the lid and stir the soup. Her voice echoed in the empty hall.",
)


class CorpusBuildError(RuntimeError):
    """The demo corpus cannot be built; the message says why and what to install."""


@dataclass(frozen=True)
class _Clip:
    name: str  # file stem, filesystem-safe
    kind: str  # speech | noise
    source: str
    audio: np.ndarray


def build(
    out_dir: Path, *, progress: bool = True, max_clips: int | None = None, noise_duration_s: float = NOISE_DURATION_S
) -> None:
    """Build the demo corpus into ``out_dir`` (``speech/``, ``noise/``, ``corpus.csv``).

    ``max_clips``: at most this many clips from each kind of speech (recorded, synthesised);
    for quick tests. ``noise_duration_s``: length of each noise file.

    Raises:
        ValueError: ``max_clips`` below 1 or ``noise_duration_s`` below 1 s.
        CorpusBuildError: pocketsphinx-testdata or espeak-ng missing or failing, a recording
            that is empty or not 16 kHz mono, or two sources giving the same clip name.
    """
    out_dir = Path(out_dir)
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be at least 1, got {max_clips}")
    if not noise_duration_s >= 1.0:
        raise ValueError(f"noise_duration_s must be at least 1 s, got {noise_duration_s}")
    recordings = _find_recordings()
    _check_espeak()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    leftovers = [*(out_dir / "speech").glob(".*.part"), *(out_dir / "noise").glob(".*.part")]
    leftovers += [p for name in ("corpus.csv", COMPLETE_MARKER) for p in out_dir.glob(f".{name}.*.part")]
    for part in leftovers:  # temporary files of a killed build
        part.unlink()

    meter = pyloudnorm.Meter(SAMPLE_RATE)
    rows: list[dict[str, str]] = []
    # (kind of source, what makes its clips when called)
    jobs: list[tuple[str, Callable[[], list[_Clip]]]] = [("recorded", partial(_recorded_clips, p)) for p in recordings]
    jobs += [("espeak", partial(_espeak_clips, i)) for i in range(len(SENTENCES))]
    jobs += [("noise", partial(_colored_noise_clips, color, noise_duration_s)) for color in COLORS]
    jobs += [("babble", partial(_babble_clips, noise_duration_s))]
    counts = {"recorded": 0, "espeak": 0}
    written: set[Path] = set()
    with tqdm(jobs, desc="demo corpus", unit="src", disable=not progress) as bar:
        for job_kind, make_clips in bar:
            if job_kind in counts:
                if max_clips is not None and counts[job_kind] >= max_clips:
                    continue
                clips = [clip for clip in make_clips() if _has_headroom(clip.audio, meter)]
                if max_clips is not None:
                    clips = clips[: max_clips - counts[job_kind]]
                counts[job_kind] += len(clips)
            else:
                clips = make_clips()
            for clip in clips:
                rel = Path(clip.kind) / f"{clip.name}.wav"
                if rel in written:
                    raise CorpusBuildError(f"{out_dir / rel}: two sources give the same clip name")
                written.add(rel)
                rows.append(_write_clip(out_dir, rel, clip, meter))

    for sub in ("speech", "noise"):  # files of an older build that this one did not write
        for stale in (out_dir / sub).glob("*.wav"):
            if stale.relative_to(out_dir) not in written:
                stale.unlink()
    with atomic_path(out_dir / "corpus.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out_dir / COMPLETE_MARKER, f"{len(rows)} files\n")


def is_complete(out_dir: Path) -> bool:
    return (Path(out_dir) / COMPLETE_MARKER).is_file()


# --- sources -------------------------------------------------------------------------------


def _find_recordings() -> list[Path]:
    if not POCKETSPHINX_DATA.is_dir():
        raise CorpusBuildError(
            f"{POCKETSPHINX_DATA}: not found; install the Debian package pocketsphinx-testdata "
            "(sudo apt-get install pocketsphinx-testdata)"
        )
    found = sorted({p for pattern in RECORDING_GLOBS for p in POCKETSPHINX_DATA.glob(pattern)})
    if not found:
        raise CorpusBuildError(
            f"{POCKETSPHINX_DATA}: holds no recordings ({', '.join(RECORDING_GLOBS)}); "
            "reinstall the Debian package pocketsphinx-testdata"
        )
    return found


def _check_espeak() -> None:
    if shutil.which(ESPEAK) is None:
        raise CorpusBuildError(
            f"{ESPEAK}: command not found; install the Debian package espeak-ng (sudo apt-get install espeak-ng)"
        )


def _read_recording(path: Path) -> np.ndarray:
    if path.suffix == ".raw":
        data = np.fromfile(path, dtype="<i2")
        if data.size == 0:
            raise CorpusBuildError(f"{path}: empty recording")
        return data.astype(np.float32) / 32768.0
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE or audio.shape[1] != 1:
        raise CorpusBuildError(f"{path}: expected 16 kHz mono, got {rate} Hz x {audio.shape[1]}")
    return audio[:, 0]


def _recorded_clips(path: Path) -> list[_Clip]:
    audio = _read_recording(path)
    rel = path.relative_to(POCKETSPHINX_DATA).as_posix()
    if _is_clipped(audio):  # a clipped reference would confound the clipping family
        return []
    stem = "ps_" + rel.rsplit(".", 1)[0].replace("/", "_").replace(".", "_").replace("-", "_")
    clips = []
    for start, end in _cut(audio):
        clips.append(
            _Clip(
                name=f"{stem}_{start / SAMPLE_RATE:05.2f}s".replace(".", "_"),
                kind="speech",
                source=f"pocketsphinx:{rel}@{start / SAMPLE_RATE:.3f}-{end / SAMPLE_RATE:.3f}s",
                audio=audio[start:end],
            )
        )
    return clips


def _espeak_clips(index: int) -> list[_Clip]:
    voice = VOICES[index // 2 % len(VOICES)]
    text = SENTENCES[index]
    audio = _espeak(voice, text)
    segments = _cut(audio)
    clips = []
    for start, end in segments:
        suffix = f"_{start / SAMPLE_RATE:05.2f}s".replace(".", "_") if len(segments) > 1 else ""
        clips.append(
            _Clip(
                name=f"tts_{index:02d}_{voice.replace('+', '_').replace('-', '_')}{suffix}",
                kind="speech",
                source=f"espeak-ng:{voice}:{text}",
                audio=audio[start:end],
            )
        )
    return clips


def _espeak(voice: str, text: str) -> np.ndarray:
    """Speak ``text`` with ``voice``; float32 at 16 kHz."""
    result = subprocess.run([ESPEAK, "-v", voice, "--stdout", text], capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise CorpusBuildError(f"{ESPEAK} -v {voice}: failed ({result.stderr.decode(errors='replace').strip()})")
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != ESPEAK_SAMPLE_RATE:
        raise CorpusBuildError(f"{ESPEAK} -v {voice}: wrote {rate} Hz, expected {ESPEAK_SAMPLE_RATE}")
    # audio.resample (scipy polyphase) is bit-exact run to run; torch kernels may change their
    # summation order with the thread count, which would break byte-identical builds.
    return resample(audio, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)


def _colored_noise_clips(color: str, duration_s: float) -> list[_Clip]:
    """One clip of ``color`` noise, ``duration_s`` long."""
    index = COLORS.index(color)
    rng = np.random.default_rng([SEED, index])
    audio = colored_noise(color, round(duration_s * SAMPLE_RATE), rng, sample_rate=SAMPLE_RATE)
    return [_Clip(color, "noise", f"jndlab:perturbations.noises.colored_noise:{color}:seed={SEED}/{index}", audio)]


def _babble_clips(duration_s: float) -> list[_Clip]:
    """One clip: six espeak-ng talkers, each looped from a seeded random offset, at equal RMS."""
    rng = np.random.default_rng([SEED, len(COLORS)])  # a stream apart from the colours
    num_samples = round(duration_s * SAMPLE_RATE)
    mix = np.zeros(num_samples, dtype=np.float64)
    for voice, text in zip(BABBLE_VOICES, BABBLE_TEXTS, strict=True):
        talker = _espeak(voice, text)
        start, end = _trim(talker)
        talker = talker[start:end].astype(np.float64)
        loop = np.tile(talker, num_samples // len(talker) + 2)
        offset = int(rng.integers(len(talker)))
        mix += loop[offset : offset + num_samples] / np.sqrt(np.mean(talker**2))
    voices = " ".join(BABBLE_VOICES)
    source = f"espeak-ng babble:{voices}:seed={SEED}/{len(COLORS)}"
    return [_Clip("babble", "noise", source, mix.astype(np.float32))]


# --- trimming, cutting, normalising ---------------------------------------------------------


def _frame_db(audio: np.ndarray) -> np.ndarray:
    """Energy of 20 ms frames every 10 ms, in dB re full scale."""
    frame, hop = round(FRAME_S * SAMPLE_RATE), round(HOP_S * SAMPLE_RATE)
    if len(audio) < frame:
        return np.full(1, -120.0)
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), frame)[::hop]
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _speech_threshold_db(audio: np.ndarray) -> float:
    """Frame energy above which ``audio`` is speech, from the whole recording (its floor)."""
    frame_db = _frame_db(audio)
    return max(frame_db.max() - SPEECH_BELOW_PEAK_DB, np.percentile(frame_db, 10) + SPEECH_ABOVE_FLOOR_DB)


def _trim(audio: np.ndarray, threshold_db: float | None = None) -> tuple[int, int]:
    """Sample range without leading and trailing silence (plus a 10 ms margin).

    ``threshold_db``: speech threshold; by default from ``audio`` itself. Pieces of a longer
    recording pass the recording's, because a piece without pauses has no floor of its own.
    """
    if threshold_db is None:
        threshold_db = _speech_threshold_db(audio)
    active = _frame_db(audio) > threshold_db
    if len(audio) < round(FRAME_S * SAMPLE_RATE) or not active.any():
        return 0, 0
    hop, frame = round(HOP_S * SAMPLE_RATE), round(FRAME_S * SAMPLE_RATE)
    margin = round(TRIM_MARGIN_S * SAMPLE_RATE)
    first = int(np.argmax(active))
    last = len(active) - 1 - int(np.argmax(active[::-1]))
    return max(0, first * hop - margin), min(len(audio), last * hop + frame + margin)


def _cut(audio: np.ndarray) -> list[tuple[int, int]]:
    """Trimmed 2–4 s segments of ``audio``, cut at its quietest 100 ms inside each window."""
    threshold_db = _speech_threshold_db(audio)
    start, end = _trim(audio, threshold_db)
    min_len, max_len = round(CLIP_MIN_S * SAMPLE_RATE), round(CLIP_MAX_S * SAMPLE_RATE)
    hop = round(HOP_S * SAMPLE_RATE)
    smooth = max(1, round(CUT_SMOOTH_S / HOP_S))
    pieces = []
    while end - start > max_len:
        # leave at least min_len behind the cut, so the remainder can still be a clip
        lo, hi = start + min_len, min(start + max_len, end - min_len)
        if hi - lo < round((CUT_SMOOTH_S + FRAME_S) * SAMPLE_RATE):  # just over 4 s: drop the tail
            hi = start + max_len
        db = np.convolve(_frame_db(audio[lo:hi]), np.ones(smooth) / smooth, mode="valid")
        cut = lo + (int(np.argmin(db)) + smooth // 2) * hop
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    segments = []
    for piece_start, piece_end in pieces:
        a, b = _trim(audio[piece_start:piece_end], threshold_db)
        if min_len <= b - a <= max_len:
            segments.append((piece_start + a, piece_start + b))
    return segments


def _is_clipped(audio: np.ndarray) -> bool:
    """Two or more consecutive samples at full scale."""
    at_full_scale = np.abs(audio) >= 0.999
    return bool(np.any(at_full_scale[1:] & at_full_scale[:-1]))


def _has_headroom(audio: np.ndarray, meter: pyloudnorm.Meter) -> bool:
    """Whether ``audio`` peaks at most SPEECH_PEAK_MAX_DBFS once normalised to TARGET_LUFS."""
    audio = audio.astype(np.float64)
    peak_db = 20.0 * np.log10(np.max(np.abs(audio)))
    return peak_db + TARGET_LUFS - meter.integrated_loudness(audio) <= SPEECH_PEAK_MAX_DBFS


def _write_clip(out_dir: Path, rel: Path, clip: _Clip, meter: pyloudnorm.Meter) -> dict[str, str]:
    audio = clip.audio.astype(np.float64)
    gain = 10.0 ** ((TARGET_LUFS - meter.integrated_loudness(audio)) / 20.0)
    # Never clip: where -23 LUFS would push peaks above -1 dBFS (brown noise, whose energy
    # sits below the K-weighting's high-pass), scale to the peak limit instead.
    peak_limit = 10.0 ** (PEAK_LIMIT_DBFS / 20.0)
    gain = min(gain, peak_limit / np.max(np.abs(audio)))
    path = save_audio(out_dir / rel, (audio * gain).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    written, _ = sf.read(str(path), dtype="float64")  # measure what a reader will get
    return {
        "path": rel.as_posix(),
        "kind": clip.kind,
        "source": clip.source,
        "duration_s": f"{len(written) / SAMPLE_RATE:.4f}",
        "sample_rate": str(SAMPLE_RATE),
        "loudness_lufs": f"{meter.integrated_loudness(written):.2f}",
    }

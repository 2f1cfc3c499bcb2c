"""One job: a reference or a stimulus, made and written by whichever worker runs it.

A job is a frozen record of everything its output depends on (``Job.key`` hashes it for
the journal) and nothing about the runner. ``run_job`` never raises for bad data: its
``JobResult`` says ``ok``, ``skipped`` (an unusable input) or ``failed`` (the family raised).

Phase 1 (reference jobs) reads each input, checks it, resamples it if asked, normalises it
to the target loudness and writes it. Phase 2 (stimulus jobs) reads that written reference,
checked against its sha256, so a listener's reference is exactly what the stimulus was made from.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from perturbations.audio import AudioError, audio_format, encode_audio, load_audio
from perturbations.audio import resample as resample_audio
from perturbations.files import atomic_write_bytes
from perturbations.manifest import ManifestRow

PEAK_LIMIT = 0.99  # a normalised reference louder than this is turned down instead of clipped
MIN_DURATION_S = 0.5  # BS.1770 gates 400 ms blocks; shorter clips have no defined loudness


@dataclass(frozen=True)
class Job:
    """One reference or one stimulus: everything a worker needs, and nothing about the runner."""

    kind: str  # "reference" | "stimulus"
    stimulus_id: str
    reference_id: str
    item_id: str
    source: str  # absolute path of the input file
    source_rel: str  # relative to --input, for the manifest
    speaker: str
    family: str
    level: float
    seed: int
    rel_path: str  # relative to the output folder
    reference_rel_path: str
    out_root: str
    sample_rate: int
    resample: bool
    target_lufs: float
    subtype: str
    family_options: tuple[tuple[str, str], ...]
    code_version: str
    identity: str = ""  # source size+mtime (reference jobs) or the reference's sha256 (stimuli)
    headroom_db: float = 0.0  # reference jobs: extra attenuation below target_lufs (see generate)
    reference_lufs: float | None = None  # stimulus jobs: the written reference's measured loudness

    @property
    def key(self) -> str:
        """Identifies what the output depends on; the journal is keyed by it."""
        fields = asdict(self)
        for ignored in ("out_root", "code_version", "source"):  # moving the folders keeps results
            fields.pop(ignored)
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class JobResult:
    """What ``run_job`` returns: the row (as CSV strings) when ``status`` is ``ok``, else the reason."""

    key: str
    status: str  # "ok" | "skipped" (bad input) | "failed" (the family raised)
    stimulus_id: str
    family: str
    source: str
    reason: str = ""
    row: dict[str, str] | None = None
    item_id: str = ""
    headroom_needed_db: float | None = None  # a stimulus that would clip: how far above full scale


def run_job(job: Job) -> JobResult:
    """Make and write one job's audio; return its row or why it could not be made.

    Never raises for bad data: an ``AudioError`` (unusable input) gives ``skipped``, any other
    exception ``failed`` with ``TypeName: message`` (and, for ``stimulus.HeadroomError``, the
    dB above full scale in ``headroom_needed_db``). Runs in any process; reads and writes
    only under ``job.out_root`` and ``job.source``.
    """
    try:
        if job.kind == "reference":
            row = _reference_job(job)
        else:
            row = _stimulus_job(job)
    except AudioError as error:
        return JobResult(job.key, "skipped", job.stimulus_id, job.family, job.source, error.reason, item_id=job.item_id)
    except Exception as error:  # noqa: BLE001 - one bad stimulus must not end the run; it is reported
        return JobResult(
            job.key,
            "failed",
            job.stimulus_id,
            job.family,
            job.source,
            f"{type(error).__name__}: {error}",
            item_id=job.item_id,
            headroom_needed_db=_headroom_needed_db(error),
        )
    return JobResult(job.key, "ok", job.stimulus_id, job.family, job.source, row=row.to_csv_dict(), item_id=job.item_id)


def _headroom_needed_db(error: Exception) -> float | None:
    """For ``stimulus.HeadroomError``: the dB by which the stimulus would exceed full scale."""
    from perturbations.stimulus import HeadroomError  # imported where used, as in _stimulus_job

    if not isinstance(error, HeadroomError):
        return None
    return max(float(error.peak_dbfs), 0.0)


def prepare_reference(
    path: str | os.PathLike, sample_rate: int, *, resample: bool, target_lufs: float, headroom_db: float = 0.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load an input as a reference: checked, at ``sample_rate``, normalised to ``target_lufs``.

    Returns float32 mono audio, shape ``(samples,)``, at ``sample_rate`` Hz, and its params
    (``target_loudness_lufs``, ``gain_db``, and ``resampled_from_hz``, ``peak_limited``,
    ``headroom_db`` when they apply). ``resample``: convert another rate (``audio.resample``)
    instead of refusing it. ``headroom_db``: turn the reference down by this much more, for a
    clip whose stimuli would otherwise clip after loudness matching (recorded in the params).
    Loudness: ITU-R BS.1770-4 (``loudness.loudness_lufs``); peaks above ``PEAK_LIMIT`` are
    turned down, never clipped.

    Raises ``AudioError`` (file and reason) for anything unusable: unreadable, multichannel,
    silent, shorter than ``MIN_DURATION_S``, or at another rate without ``resample``.
    """
    from perturbations.loudness import loudness_lufs

    audio, rate = load_audio(path)
    params: dict[str, Any] = {"target_loudness_lufs": float(target_lufs)}
    if rate != sample_rate:
        if not resample:
            raise AudioError(path, f"sample rate is {rate} Hz, expected {sample_rate} Hz (pass --resample to convert)")
        audio = resample_audio(audio, rate, sample_rate)
        params["resampled_from_hz"] = int(rate)
    duration_s = len(audio) / sample_rate
    if duration_s < MIN_DURATION_S:
        raise AudioError(
            path, f"is too short ({duration_s:.3f} s; at least {MIN_DURATION_S} s is needed to measure loudness)"
        )
    try:
        measured_lufs = loudness_lufs(audio, sample_rate)
    except ValueError as error:  # silent after BS.1770 gating, or too short
        raise AudioError(path, f"has no measurable loudness ({error})") from None
    # what loudness.normalize_loudness computes, from the one measurement just made
    gain_to_target = 10.0 ** ((float(target_lufs) - measured_lufs) / 20.0)
    normalised = (np.asarray(audio, dtype=np.float64) * gain_to_target).astype(np.float32)
    peak = float(np.max(np.abs(normalised)))
    if peak > PEAK_LIMIT:  # never clip: turn the whole clip down and record it
        normalised = (normalised * (PEAK_LIMIT / peak)).astype(np.float32)
        params["peak_limited"] = True
    if headroom_db > 0:  # after the peak limit, so every dB of it is real headroom
        normalised = (normalised.astype(np.float64) * 10.0 ** (-headroom_db / 20.0)).astype(np.float32)
        params["headroom_db"] = float(headroom_db)
    gain = float(np.max(np.abs(normalised))) / max(float(np.max(np.abs(audio))), 1e-12)
    params["gain_db"] = round(20.0 * math.log10(gain), 3)
    return normalised, params


def _read_checked(path: Path, expected_sha256: str, sample_rate: int) -> np.ndarray:
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise RuntimeError(
            f"{path}: reference changed on disk (sha256 {actual[:12]}…, expected {expected_sha256[:12]}…)"
        )
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != sample_rate or audio.ndim != 1:
        raise RuntimeError(f"{path}: reference is not mono at {sample_rate} Hz")
    return audio


@functools.lru_cache(maxsize=32)
def family_instance(name: str, options: tuple[tuple[str, str], ...]):
    """The registry's family ``name`` built with ``options`` (e.g. ``(("noise_dir", "/data/noise"),)``).

    One instance per (family, options) per process: some families load noise or RIR folders.
    Raises what ``registry.get_family`` raises: ``ValueError`` for an unknown name or a bad
    option value, ``OSError`` for an unreadable folder, ``TypeError`` for an unknown option.
    """
    from perturbations.registry import get_family

    return get_family(name, **dict(options))


def _reference_job(job: Job) -> ManifestRow:
    from perturbations.loudness import loudness_lufs

    audio, params = prepare_reference(
        job.source, job.sample_rate, resample=job.resample, target_lufs=job.target_lufs, headroom_db=job.headroom_db
    )
    return _write_row(job, audio, params, float(loudness_lufs(audio, job.sample_rate)))


def _stimulus_job(job: Job) -> ManifestRow:
    from perturbations.stimulus import make_stimulus

    reference = _read_checked(Path(job.out_root) / job.reference_rel_path, job.identity, job.sample_rate)
    family = family_instance(job.family, job.family_options)
    audio, params = make_stimulus(
        family, reference, job.sample_rate, job.level, job.seed, reference_lufs=job.reference_lufs
    )
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape != reference.shape:
        raise RuntimeError(f"make_stimulus returned {audio.shape}, reference is {reference.shape}")
    return _write_row(job, audio, params, float(params["loudness_lufs"]))  # matched by construction; tests measure it


def _write_row(job: Job, audio: np.ndarray, params: dict[str, Any], loudness_lufs: float) -> ManifestRow:
    """Write ``audio`` to the job's path atomically (what ``save_audio`` writes) and return its manifest row.

    The sha256 is that of the bytes in memory, which saves reading the file back; the file
    holds exactly these bytes. A reference job's planned family, level and reference path
    are its own (``plan.plan_references``).
    """
    out = Path(job.out_root) / job.rel_path
    data = encode_audio(audio, job.sample_rate, subtype=job.subtype, fmt=audio_format(out), name=out)
    atomic_write_bytes(out, data, fsync=False)  # as save_audio: the journal checks the sha256 on resume
    return ManifestRow(
        stimulus_id=job.stimulus_id,
        reference=job.reference_id,
        path=job.rel_path,
        family=job.family,
        level=job.level,
        params=params,
        seed=job.seed,
        sample_rate=job.sample_rate,
        num_samples=len(audio),
        sha256=hashlib.sha256(data).hexdigest(),
        reference_path=job.reference_rel_path,
        loudness_lufs=loudness_lufs,
        source=job.source_rel,
        speaker=job.speaker,
        jndlab_version=job.code_version,
    )

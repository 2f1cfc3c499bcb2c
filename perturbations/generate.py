"""The stimulus engine: plan (inputs × families × levels), run the jobs, write manifest.csv.

A stimulus is a pure function of (reference, family, level, seed), so every job is
independent and can run anywhere: in this process, in local worker processes, or on a
Dask cluster. The manifest does not depend on the runner: rows are sorted canonically and
hold nothing about timing or workers.

Two phases. Phase 1 reads each input, checks it, resamples it if asked, normalises it to
``target_lufs`` and writes it once as the reference. Phase 2 derives every stimulus from
that written reference (checked against its sha256), so what a listener hears as the
reference is exactly what the stimulus was made from.

Resume. The main process appends each finished row to ``OUTPUT/.jndlab-journal.jsonl``
(fsync'd). A job counts as done only when its key is in the journal AND its file exists
with the journaled sha256; anything else is redone. Audio and the manifest are written
atomically, and stale ``.*.part`` files of a killed run are removed at start, so a run
killed at any point (SIGKILL included) resumes with the same command.
"""
from __future__ import annotations

import concurrent.futures
import fcntl
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf
from tqdm import tqdm

from perturbations.audio import SUPPORTED_SAMPLE_RATES, AudioError, audio_format, encode_audio, load_audio
from perturbations.audio import resample as resample_audio
from perturbations.files import atomic_write_bytes
from perturbations.provenance import code_version
from perturbations.manifest import (
    REFERENCE_FAMILY,
    ManifestRow,
    format_level,
    row_from_dict,
    sha256_file,
    write_manifest,
)

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_LEVELS = 11
DEFAULT_SEED = 0
TARGET_LUFS = -23.0  # EBU R128 programme loudness; every reference is normalised to it
PEAK_LIMIT = 0.99  # a normalised reference louder than this is turned down instead of clipped
MIN_DURATION_S = 0.5  # BS.1770 gates 400 ms blocks; shorter clips have no defined loudness
JOURNAL_NAME = ".jndlab-journal.jsonl"
LOCK_NAME = ".jndlab-lock"
MANIFEST_NAME = "manifest.csv"
REFERENCE_DIR = "reference"
SUBTYPES = ("FLOAT", "PCM_16", "PCM_24")
EXCLUDED_BY_DEFAULT = ("chain",)
HEADROOM_ROUNDS = 2  # at most this many times a reference is turned down to make room
HEADROOM_MARGIN_DB = 0.5  # beyond the measured excess: other levels of the ladder may peak higher  # combined perturbations are opt-in, as in DPAM


class GenerateError(RuntimeError):
    """The run cannot go on; the message is one line that says why."""


# ---------------------------------------------------------------- planning


def parse_levels(spec: str | int | Sequence[float]) -> tuple[float, ...]:
    """``"11"`` or ``11``: 11 levels evenly spaced over 0..100. ``"0,50,100"``: those levels."""
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            try:
                values = [float(part) for part in text.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"--levels: cannot read {spec!r} as a comma-separated list of numbers") from None
            return _check_levels(values, spec)
        try:
            count = int(text)
        except ValueError:
            raise ValueError(f"--levels: expected a count such as 11 or a list such as 0,50,100, got {spec!r}") from None
        return parse_levels(count)
    if isinstance(spec, (int, np.integer)):
        if spec < 2:
            raise ValueError(f"--levels: a count must be at least 2 (0 and 100), got {spec}; give a list such as '50,' for one level")
        return _check_levels([round(float(v), 2) for v in np.linspace(0.0, 100.0, int(spec))], spec)
    return _check_levels([float(v) for v in spec], spec)


def _check_levels(values: list[float], spec: Any) -> tuple[float, ...]:
    if not values:
        raise ValueError(f"--levels: no levels in {spec!r}")
    for value in values:
        if not (math.isfinite(value) and 0.0 <= value <= 100.0):
            raise ValueError(f"--levels: every level must lie in [0, 100], got {format_level(value)}")
    return tuple(sorted(set(values)))


def derive_seed(global_seed: int, reference_id: str, family: str) -> int:
    """A stable 63-bit seed per ladder (reference × family). hashlib, not hash(): the latter is salted per process.

    The seed does not depend on the level, so every rung of a ladder makes the same random
    choices (noise type and excerpt, room, EQ signs, chain order) and differs from its
    neighbours only in strength: a listener walking the ladder hears one perturbation grow.
    """
    text = f"jndlab-seed-v2|{int(global_seed)}|{reference_id}|{family}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def level_tag(level: float) -> str:
    """``L010`` for integral levels, ``L016.67`` otherwise; filesystem-safe."""
    if float(level).is_integer():
        return f"L{int(level):03d}"
    return f"L{float(level):06.2f}"


def safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def reference_id(item_id: str) -> str:
    return f"{safe_id(item_id)}__{REFERENCE_FAMILY}"


def stimulus_id(item_id: str, family: str, level: float) -> str:
    return f"{safe_id(item_id)}__{family}__{level_tag(level)}"


def resolve_families(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None``: every single family (not ``chain``). ``"all"``: every family. Else a comma list."""
    from perturbations.registry import available_families

    available = list(available_families())
    if spec is None or spec == "":
        return tuple(name for name in available if name not in EXCLUDED_BY_DEFAULT)
    names = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [name for name in names if name]
    if names == ["all"]:
        return tuple(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise GenerateError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; choose from {', '.join(available)}")
    if not names:
        raise GenerateError("--families is empty")
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


# ---------------------------------------------------------------- jobs


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
    """Run one job. Never raises for bad data: the result says what went wrong."""
    try:
        if job.kind == "reference":
            row = _reference_job(job)
        else:
            row = _stimulus_job(job)
    except AudioError as error:
        return JobResult(job.key, "skipped", job.stimulus_id, job.family, job.source, error.reason, item_id=job.item_id)
    except Exception as error:  # one bad stimulus must not end the run; it is reported
        return JobResult(job.key, "failed", job.stimulus_id, job.family, job.source, f"{type(error).__name__}: {error}",
                         item_id=job.item_id, headroom_needed_db=_headroom_needed_db(error))
    return JobResult(job.key, "ok", job.stimulus_id, job.family, job.source, row=row.to_csv_dict(), item_id=job.item_id)


def _headroom_needed_db(error: Exception) -> float | None:
    """For ``stimulus.HeadroomError``: the dB by which the stimulus would exceed full scale."""
    if type(error).__name__ != "HeadroomError":
        return None
    return max(float(error.peak_dbfs), 0.0)


def prepare_reference(
    path: str | os.PathLike, sample_rate: int, *, resample: bool, target_lufs: float, headroom_db: float = 0.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Load an input as a reference: checked, at ``sample_rate``, normalised to ``target_lufs``.

    ``headroom_db``: turn the reference down by this much more, for a clip whose stimuli
    would otherwise clip after loudness matching (recorded in the params).

    Raises ``AudioError`` (file and reason) for anything unusable.
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
        raise AudioError(path, f"is too short ({duration_s:.3f} s; at least {MIN_DURATION_S} s is needed to measure loudness)")
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
        raise RuntimeError(f"{path}: reference changed on disk (sha256 {actual[:12]}…, expected {expected_sha256[:12]}…)")
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != sample_rate or audio.ndim != 1:
        raise RuntimeError(f"{path}: reference is not mono at {sample_rate} Hz")
    return audio


@functools.lru_cache(maxsize=32)
def _family(name: str, options: tuple[tuple[str, str], ...]):
    """One instance per (family, options) per process: some families load noise or RIR folders."""
    from perturbations.registry import get_family

    return get_family(name, **dict(options))


def _reference_job(job: Job) -> ManifestRow:
    from perturbations.loudness import loudness_lufs

    audio, params = prepare_reference(job.source, job.sample_rate, resample=job.resample, target_lufs=job.target_lufs,
                                      headroom_db=job.headroom_db)
    sha256 = _write_audio(Path(job.out_root) / job.rel_path, audio, job.sample_rate, job.subtype)
    return ManifestRow(
        stimulus_id=job.stimulus_id,
        reference=job.reference_id,
        path=job.rel_path,
        family=REFERENCE_FAMILY,
        level=0.0,
        params=params,
        seed=job.seed,
        sample_rate=job.sample_rate,
        num_samples=len(audio),
        sha256=sha256,
        reference_path=job.rel_path,
        loudness_lufs=float(loudness_lufs(audio, job.sample_rate)),
        source=job.source_rel,
        speaker=job.speaker,
        jndlab_version=job.code_version,
    )


def _write_audio(out: Path, audio: np.ndarray, sample_rate: int, subtype: str) -> str:
    """Write ``audio`` atomically (what ``save_audio`` writes) and return the sha256 of the bytes written.

    Hashing the bytes in memory saves reading the file back; the file holds exactly these bytes.
    """
    data = encode_audio(audio, sample_rate, subtype=subtype, fmt=audio_format(out), name=out)
    atomic_write_bytes(out, data, fsync=False)  # as save_audio: the journal checks the sha256 on resume
    return hashlib.sha256(data).hexdigest()


def _stimulus_job(job: Job) -> ManifestRow:
    from perturbations.stimulus import make_stimulus

    reference = _read_checked(Path(job.out_root) / job.reference_rel_path, job.identity, job.sample_rate)
    family = _family(job.family, job.family_options)
    audio, params = make_stimulus(family, reference, job.sample_rate, job.level, job.seed, reference_lufs=job.reference_lufs)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape != reference.shape:
        raise RuntimeError(f"make_stimulus returned {audio.shape}, reference is {reference.shape}")
    sha256 = _write_audio(Path(job.out_root) / job.rel_path, audio, job.sample_rate, job.subtype)
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
        sha256=sha256,
        reference_path=job.reference_rel_path,
        loudness_lufs=float(params["loudness_lufs"]),  # matched by construction; tests measure it
        source=job.source_rel,
        speaker=job.speaker,
        jndlab_version=job.code_version,
    )


# ---------------------------------------------------------------- runners


class Runner:
    """Runs jobs and yields their results in completion order."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialRunner(Runner):
    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        for job in jobs:
            yield run_job(job)


class ProcessRunner(Runner):
    """``--workers K``: local worker processes (forkserver: safe beside threads, cheaper than spawn)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise GenerateError(f"--workers must be at least 1, got {workers}")
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("forkserver")
        )

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        futures = [self.pool.submit(run_job, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner(Runner):
    """``--scheduler ADDRESS``: an existing Dask distributed cluster.

    The workers need this package importable and the output folder on a shared filesystem.
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0):
        from distributed import Client

        try:
            self.client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise GenerateError(f"cannot reach the Dask scheduler at {address} ({error})") from None

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        from distributed import as_completed

        if not jobs:
            return
        # pure=False: keys must not collide with an earlier run's cached results on a long-lived cluster
        futures = self.client.map(run_job, list(jobs), pure=False)
        try:
            for future in as_completed(futures, loop=self.client.loop):  # our client is not the default one
                yield future.result()
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()


def make_runner(workers: int = 1, scheduler: str | None = None) -> Runner:
    if scheduler:
        return DaskRunner(scheduler)
    if workers <= 1:
        return SerialRunner()
    return ProcessRunner(workers)


# ---------------------------------------------------------------- journal


class Journal:
    """Append-only record of finished jobs; a torn last line (a kill mid-append) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict[str, str]] = {}
        self.headroom_db: dict[str, float] = {}  # item_id -> extra attenuation decided earlier
        if path.exists():
            with open(path, "rb") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        if "headroom_db" in entry:
                            self.headroom_db[entry["item_id"]] = float(entry["headroom_db"])
                        else:
                            self.done[entry["key"]] = entry["row"]
                    except (ValueError, KeyError, TypeError):
                        continue
        self.handle = open(path, "a", encoding="utf-8")

    def finished(self, job: Job) -> ManifestRow | None:
        """The journaled row, if the job is in the journal and its file is intact."""
        record = self.done.get(job.key)
        if record is None:
            return None
        try:
            row = row_from_dict(record)
        except ValueError:
            return None
        audio_path = Path(job.out_root) / row.path
        if row.path != job.rel_path or not audio_path.is_file() or sha256_file(audio_path) != row.sha256:
            return None
        return row

    def add(self, key: str, row: dict[str, str]) -> None:
        # one write per line, then fsync: after a kill the journal never names a clip that is not on disk
        self._append({"key": key, "row": row})
        self.done[key] = row

    def add_headroom(self, item_id: str, headroom_db: float) -> None:
        self._append({"item_id": item_id, "headroom_db": headroom_db})
        self.headroom_db[item_id] = headroom_db

    def _append(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


class _OutputLock:
    """One run per output folder at a time; the kernel drops the lock when a process dies."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME

    def __enter__(self) -> "_OutputLock":
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise GenerateError(f"another run is writing to {self.path.parent}; wait for it or choose another --output") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class GenerateConfig:
    input_dir: Path
    output_dir: Path
    families: tuple[str, ...] | None = None  # None: every single family
    levels: tuple[float, ...] = tuple(parse_levels(DEFAULT_LEVELS))
    seed: int = DEFAULT_SEED
    sample_rate: int = DEFAULT_SAMPLE_RATE
    resample: bool = False
    target_lufs: float = TARGET_LUFS
    subtype: str = "FLOAT"
    layout: str = "auto"
    family_options: tuple[tuple[str, str], ...] = ()  # e.g. (("noise_dir", "/data/noise"),)
    code_version: str | None = None  # None: code_version()


@dataclass
class Summary:
    output_dir: Path
    manifest_path: Path | None = None
    new: Counter = field(default_factory=Counter)  # per family, computed by this run
    reused: Counter = field(default_factory=Counter)  # per family, found finished in the journal
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stimulus_id, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input file, reason)
    elapsed_s: float = 0.0
    num_rows: int = 0

    @property
    def num_stimuli(self) -> int:
        return sum(n for family, n in (self.new + self.reused).items() if family != REFERENCE_FAMILY)

    @property
    def num_computed(self) -> int:
        return sum(self.new.values())

    @property
    def num_reused(self) -> int:
        return sum(self.reused.values())

    def format(self) -> str:
        rate = self.num_computed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"generated {self.num_computed} clip(s), reused {self.num_reused} from an earlier run, "
            f"in {self.elapsed_s:.1f} s ({rate:.1f} clips/s)",
            f"  {'family':<12}{'new':>7}{'reused':>8}{'failed':>8}",
        ]
        failed_by_family = Counter(sid.split("__")[-2] if sid.count("__") >= 2 else "?" for sid, _ in self.failed)
        for family in sorted(set(self.new) | set(self.reused) | set(failed_by_family), key=lambda f: (f != REFERENCE_FAMILY, f)):
            lines.append(f"  {family:<12}{self.new[family]:>7}{self.reused[family]:>8}{failed_by_family[family]:>8}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} input file(s):")
            lines += [f"  {source}: {reason}" for source, reason in self.skipped]
        if self.failed:
            lines.append(f"{len(self.failed)} stimulus/stimuli failed:")
            lines += [f"  {sid}: {reason}" for sid, reason in self.failed]
        if self.manifest_path is not None:
            lines.append(f"manifest: {self.manifest_path} ({self.num_rows} rows)")
        return "\n".join(lines)


def plan_references(config: GenerateConfig, version: str, headroom_db: dict[str, float] | None = None) -> list[Job]:
    from perturbations.corpora import find_audio

    input_dir = Path(config.input_dir)
    if not input_dir.exists():
        raise GenerateError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise GenerateError(f"input {input_dir} is not a folder")
    try:
        items = find_audio(input_dir, layout=config.layout)
    except ValueError as error:  # CorpusError: empty folder, wrong layout, duplicate ids
        raise GenerateError(str(error)) from None
    if not items:
        raise GenerateError(f"no audio files (wav, flac, ogg, mp3) found under {input_dir}")
    jobs = []
    for item in items:
        source = Path(item.path).absolute()  # not resolve(): a dangling link is reported by its own name
        try:
            source_rel = source.relative_to(input_dir.absolute()).as_posix()
        except ValueError:
            source_rel = str(source)
        stat = source.stat() if source.exists() else None
        ref_id = reference_id(item.item_id)
        rel_path = f"{REFERENCE_DIR}/{ref_id}.wav"
        jobs.append(
            Job(
                kind="reference",
                stimulus_id=ref_id,
                reference_id=ref_id,
                item_id=item.item_id,
                source=str(source),
                source_rel=source_rel,
                speaker=item.speaker or "",
                family=REFERENCE_FAMILY,
                level=0.0,
                seed=0,  # a reference draws no random numbers; --seed must not invalidate it
                rel_path=rel_path,
                reference_rel_path=rel_path,
                out_root=str(Path(config.output_dir).resolve()),
                sample_rate=config.sample_rate,
                resample=config.resample,
                target_lufs=config.target_lufs,
                subtype=config.subtype,
                family_options=(),
                code_version=version,
                identity=f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "",
                headroom_db=(headroom_db or {}).get(item.item_id, 0.0),
            )
        )
    return jobs


def plan_stimuli(config: GenerateConfig, families: Sequence[str], references: Iterable[tuple[Job, ManifestRow]]) -> list[Job]:
    jobs = []
    for ref_job, ref_row in references:
        for family in families:
            for level in config.levels:
                sid = stimulus_id(ref_job.item_id, family, level)
                jobs.append(
                    Job(
                        kind="stimulus",
                        stimulus_id=sid,
                        reference_id=ref_job.reference_id,
                        item_id=ref_job.item_id,
                        source=ref_job.source,
                        source_rel=ref_job.source_rel,
                        speaker=ref_job.speaker,
                        family=family,
                        level=float(level),
                        seed=derive_seed(config.seed, ref_job.item_id, family),
                        rel_path=f"{family}/{sid}.wav",
                        reference_rel_path=ref_row.path,
                        reference_lufs=ref_row.loudness_lufs,
                        out_root=ref_job.out_root,
                        sample_rate=config.sample_rate,
                        resample=config.resample,
                        target_lufs=config.target_lufs,
                        subtype=config.subtype,
                        family_options=config.family_options,
                        code_version=ref_job.code_version,
                        identity=ref_row.sha256,
                    )
                )
    return jobs


def generate(
    config: GenerateConfig,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    runner: Runner | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Generate the stimulus set of ``config`` into ``config.output_dir`` and write its manifest.

    Bad inputs and failing stimuli are reported through ``log`` and in the summary; the run
    goes on. Raises ``GenerateError`` for problems that stop the whole run.
    """
    start = time.perf_counter()
    if config.sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise GenerateError(f"--sample-rate must be one of {', '.join(map(str, SUPPORTED_SAMPLE_RATES))}, got {config.sample_rate}")
    if config.subtype not in SUBTYPES:
        raise GenerateError(f"subtype must be one of {', '.join(SUBTYPES)}, got {config.subtype}")
    say = log or (lambda message: tqdm.write(message, file=sys.stderr))
    families = resolve_families(config.families if config.families is None else list(config.families))
    for name in families:  # fail fast on a bad --noise-dir or --rir-dir, before any work
        try:
            _family(name, config.family_options)
        except (ValueError, OSError, TypeError, RuntimeError) as error:
            raise GenerateError(f"family {name}: {error}") from None
    version = config.code_version or code_version()
    out_dir = Path(config.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenerateError(f"cannot create output folder {out_dir} ({error.strerror})") from None
    plan_references(config, version)  # fail on a missing or empty input before touching the output
    summary = Summary(output_dir=out_dir)

    with _OutputLock(out_dir):
        for part in out_dir.rglob(".*.part"):  # half-written files of a killed run
            part.unlink(missing_ok=True)
        own_runner = runner is None
        runner = runner or make_runner(workers, scheduler)
        try:
            journal = Journal(out_dir / JOURNAL_NAME)
            try:
                rows = _run_all(config, version, families, runner, journal, summary, progress, say)
            finally:
                journal.close()
        finally:
            if own_runner:
                runner.close()
        summary.num_rows = len(rows)
        if rows:
            summary.manifest_path = write_manifest(out_dir / MANIFEST_NAME, rows)
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _run_all(
    config: GenerateConfig,
    version: str,
    families: Sequence[str],
    runner: Runner,
    journal: Journal,
    summary: Summary,
    progress: bool,
    say: Callable[[str], None],
) -> list[ManifestRow]:
    """References, then stimuli; then headroom rounds for references whose stimuli would clip.

    make_stimulus never clips: it refuses (HeadroomError). Such a reference is turned down by
    the excess plus a margin and its whole ladder is redone, so that every ladder is complete
    and shares one reference. The decision is journaled, so a resumed run plans the same.
    The outcome depends only on the inputs, never on the runner.
    """
    computed: set[str] = set()
    headroom = dict(journal.headroom_db)
    reference_jobs = plan_references(config, version, headroom)
    reference_rows = _run_phase(reference_jobs, runner, journal, computed, "references", progress)
    for result in reference_rows.failures:
        summary.skipped.append((result.source, result.reason))
        say(f"skipped {result.source}: {result.reason}")
    references = {job.item_id: (job, reference_rows.rows[job.key]) for job in reference_jobs if job.key in reference_rows.rows}
    ladders: dict[str, tuple[dict[str, ManifestRow], list[JobResult]]] = {}
    todo = list(references)
    for round_index in range(HEADROOM_ROUNDS + 1):
        jobs = plan_stimuli(config, families, [references[item] for item in todo])
        outcome = _run_phase(jobs, runner, journal, computed, "stimuli" if round_index == 0 else "headroom", progress)
        needs: dict[str, float] = {}
        for item in todo:
            keys = {job.key for job in jobs if job.item_id == item}
            failures = [r for r in outcome.failures if r.item_id == item]
            ladders[item] = ({k: v for k, v in outcome.rows.items() if k in keys}, failures)
            excess = [r.headroom_needed_db for r in failures if r.headroom_needed_db is not None]
            if excess and round_index < HEADROOM_ROUNDS:
                needs[item] = max(excess)
        if not needs:
            break
        for item, excess_db in sorted(needs.items()):
            headroom[item] = round(headroom.get(item, 0.0) + excess_db + HEADROOM_MARGIN_DB, 2)
            journal.add_headroom(item, headroom[item])
            say(f"{references[item][0].source_rel}: stimuli would clip; turning the reference down {headroom[item]:.2f} dB and redoing its ladder")
        retry = [job for job in plan_references(config, version, headroom) if job.item_id in needs]
        retried = _run_phase(retry, runner, journal, computed, "references", progress)
        for job in retry:
            if job.key in retried.rows:
                references[job.item_id] = (job, retried.rows[job.key])
        todo = [job.item_id for job in retry if job.key in retried.rows]

    rows: list[ManifestRow] = []
    for item, (job, row) in references.items():
        rows.append(row)
        _count(summary, job.key, row.family, computed)
        stimulus_rows, failures = ladders.get(item, ({}, []))
        for key, stimulus_row in stimulus_rows.items():
            rows.append(stimulus_row)
            _count(summary, key, stimulus_row.family, computed)
        for result in failures:
            summary.failed.append((result.stimulus_id, result.reason))
            say(f"failed {result.stimulus_id}: {result.reason}")
    summary.skipped.sort()
    summary.failed.sort()
    return rows


def _count(summary: Summary, key: str, family: str, computed: set[str]) -> None:
    (summary.new if key in computed else summary.reused)[family] += 1


@dataclass
class _Outcome:
    rows: dict[str, ManifestRow] = field(default_factory=dict)
    failures: list[JobResult] = field(default_factory=list)  # skipped inputs and failed stimuli


def _run_phase(jobs: list[Job], runner: Runner, journal: Journal, computed: set[str], label: str, progress: bool) -> _Outcome:
    outcome = _Outcome()
    pending = []
    for job in jobs:
        row = journal.finished(job)
        if row is None:
            pending.append(job)
        else:
            outcome.rows[job.key] = row
    with tqdm(total=len(pending), desc=label, unit="clip", disable=not progress or not pending, file=sys.stderr) as bar:
        for result in runner.map_unordered(pending):
            bar.update(1)
            if result.status == "ok":
                journal.add(result.key, result.row)
                outcome.rows[result.key] = row_from_dict(result.row)
                computed.add(result.key)
            else:
                outcome.failures.append(result)
    outcome.failures.sort(key=lambda r: (r.source, r.stimulus_id))
    return outcome

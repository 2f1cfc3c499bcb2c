"""Read a perturbation manifest (manifest.csv) and turn it into an experiment.

The manifest format is defined in DESIGN.md. Every row is validated before
anything is written, so a bad manifest creates nothing.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, null, select
from sqlalchemy.orm import Session as DbSession

from .models import Experiment, Stimulus

REQUIRED_COLUMNS = (
    "stimulus_id", "reference", "path", "family", "level", "params",
    "seed", "sample_rate", "num_samples", "sha256",
)
REFERENCE_FAMILY = "reference"
# Integers the database stores as BIGINT (seeds from perturbations.derive_seed are 63-bit).
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
INT32_MAX = 2 ** 31 - 1  # rewards and targets: INTEGER columns
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# Column sizes of the tables (models.Stimulus, models.Experiment): checked before insert so
# that SQLite (which does not enforce them) and PostgreSQL (which raises DataError) refuse
# the same values with the same message.
STIMULUS_ID_CHARS = 200  # stimuli.stimulus_id, stimuli.reference
FAMILY_CHARS = 64  # stimuli.family
NAME_CHARS = 200  # experiments.name
CODE_CHARS = 64  # experiments.prolific_completion_code / prolific_screened_out_code
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot become an experiment; the message names the row and field.

    ``line`` (the manifest's line number, header = 1) and ``field`` (the column or
    setting) are set when the problem has one, for the admin API's 422 body.
    """

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.line = line
        self.field = field


def check_text(label: str, value: Any, max_chars: int, *, allow_empty: bool = False) -> str:
    """``value`` as a string of at most ``max_chars`` characters without NUL (PostgreSQL refuses NUL).

    Raises:
        ValueError: naming ``label``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {value!r}")  # noqa: TRY004 (callers catch ValueError)
    if not value and not allow_empty:
        raise ValueError(f"{label} is empty")
    if len(value) > max_chars:
        raise ValueError(f"{label} has {len(value)} characters; at most {max_chars} fit")
    if "\x00" in value:
        raise ValueError(f"{label} contains a NUL character")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


@dataclass
class ManifestRow:
    stimulus_id: str
    reference: str
    path: str
    family: str
    level: float
    params: dict[str, Any]
    seed: int | None
    sample_rate: int
    num_samples: int
    sha256: str


def _parse_row(line: int, raw: dict[str, str], root: Path, check_files: bool) -> ManifestRow:
    def fail(field: str, why: str) -> ManifestError:
        return ManifestError(f"manifest line {line}, column {field!r}: {why}", line=line, field=field)

    try:
        level = float(raw["level"])
    except (TypeError, ValueError):
        raise fail("level", f"not a number: {raw['level']!r}") from None
    if not math.isfinite(level):
        raise fail("level", f"must be a finite number, got {raw['level']!r}")
    try:
        params = json.loads(raw["params"] or "{}", parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        raise fail("params", f"not JSON without NaN/Infinity ({error})") from None
    if not isinstance(params, dict):
        raise fail("params", "must be a JSON object")
    ints = {}
    for field, top in (("sample_rate", INT32_MAX), ("num_samples", INT64_MAX)):
        try:
            ints[field] = int(raw[field])
        except (TypeError, ValueError):
            raise fail(field, f"not an integer: {raw[field]!r}") from None
        if not 1 <= ints[field] <= top:
            raise fail(field, f"must be an integer in [1, {top}], got {ints[field]}")
    seed = None
    if raw["seed"] not in ("", None):
        try:
            seed = int(raw["seed"])
        except (TypeError, ValueError):
            raise fail("seed", f"not an integer: {raw['seed']!r}") from None
        if not INT64_MIN <= seed <= INT64_MAX:
            raise fail("seed", f"does not fit a signed 64-bit integer: {seed}")
    for field, size in (("stimulus_id", STIMULUS_ID_CHARS), ("reference", STIMULUS_ID_CHARS),
                        ("family", FAMILY_CHARS), ("path", 4096)):
        try:
            check_text(field, raw[field], size)
        except ValueError as error:
            raise fail(field, str(error)) from None
    sha256 = raw["sha256"] or ""
    if not SHA256_RE.match(sha256.lower()):
        raise fail("sha256", f"must be 64 hexadecimal digits, got {sha256[:80]!r}")
    rel = raw["path"]
    if not rel or Path(rel).is_absolute():
        raise fail("path", "must be a path relative to the manifest's folder")
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise fail("path", f"{rel!r} points outside the manifest's folder")
    if check_files and not full.is_file():
        raise fail("path", f"file not found: {full}")
    return ManifestRow(
        stimulus_id=raw["stimulus_id"], reference=raw["reference"], path=rel,
        family=raw["family"], level=level, params=params, seed=seed,
        sample_rate=ints["sample_rate"], num_samples=ints["num_samples"], sha256=sha256.lower(),
    )


def _read_rows(path: Path, root: Path, check_files: bool) -> tuple[list[ManifestRow], list[int]]:
    """The parsed rows and their line numbers (header = line 1)."""
    rows, lines = [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing columns {missing}")
        for raw in reader:
            line = reader.line_num
            short = [c for c in REQUIRED_COLUMNS if raw.get(c) is None]
            if short:
                raise ManifestError(f"manifest line {line}: missing value(s) for {short}", line=line, field=short[0])
            rows.append(_parse_row(line, raw, root, check_files))
            lines.append(line)
    return rows, lines


def read_manifest(path: str | Path, *, check_files: bool = True, verify_hashes: bool = False) -> list[ManifestRow]:
    """Parse and validate ``path``; raise ``ManifestError`` on the first problem."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    root = path.parent
    try:
        rows, lines = _read_rows(path, root, check_files)
    except (csv.Error, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not a readable UTF-8 CSV file ({error})") from None
    if not rows:
        raise ManifestError(f"{path}: no stimuli")
    seen: set[str] = set()
    for line, row in zip(lines, rows):
        if row.stimulus_id in seen:
            raise ManifestError(f"{path}: line {line}, column 'stimulus_id': duplicate stimulus_id "
                                f"{row.stimulus_id!r}", line=line, field="stimulus_id")
        seen.add(row.stimulus_id)
    references = {r.stimulus_id: (line, r) for line, r in zip(lines, rows) if r.family == REFERENCE_FAMILY}
    for line, row in zip(lines, rows):
        if row.family == REFERENCE_FAMILY:
            continue
        if row.reference not in references:
            raise ManifestError(f"{path}: line {line}, column 'reference': stimulus {row.stimulus_id!r} names "
                                f"reference {row.reference!r}, which has no row with family=reference",
                                line=line, field="reference")
        # A perturbed clip must be sample-aligned with its reference: a different length or rate
        # would tell the answer (Content-Length, the duration) before anyone listens.
        ref_line, ref = references[row.reference]
        for field in ("sample_rate", "num_samples"):
            if getattr(row, field) != getattr(ref, field):
                raise ManifestError(
                    f"{path}: line {line}, column {field!r}: stimulus {row.stimulus_id!r} has {field}="
                    f"{getattr(row, field)} but its reference {ref.stimulus_id!r} (line {ref_line}) has "
                    f"{getattr(ref, field)}; a stimulus must be sample-aligned with its reference",
                    line=line, field=field)
    if not any(r.family != REFERENCE_FAMILY for r in rows):
        raise ManifestError(f"{path}: no perturbed stimuli, only references")
    if check_files:
        for row in rows:
            check_audio(root / row.path, row)
    if verify_hashes:
        for row in rows:
            digest = hashlib.sha256((root / row.path).read_bytes()).hexdigest()
            if digest != row.sha256:
                raise ManifestError(f"{path}: sha256 mismatch for {row.path}")
    return rows


def check_audio(full: Path, row: ManifestRow) -> None:
    """Decode ``full`` end to end (soundfile) and compare it with its manifest row.

    Raises:
        ManifestError: the file does not decode, or its sample rate or length differs
            from the row's ``sample_rate`` / ``num_samples``; the message names the file.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(full)) as handle:
            rate, frames = handle.samplerate, handle.frames
            for _block in handle.blocks(blocksize=1 << 16, dtype="float32"):
                pass  # decode every frame: a truncated or corrupt file fails here, not mid-study
    except (RuntimeError, OSError, sf.LibsndfileError) as error:
        raise ManifestError(f"stimulus {row.stimulus_id!r}: {full} does not decode as audio ({error})") from None
    if rate != row.sample_rate:
        raise ManifestError(f"stimulus {row.stimulus_id!r}: {full} is {rate} Hz, the manifest says {row.sample_rate}")
    if frames != row.num_samples:
        raise ManifestError(f"stimulus {row.stimulus_id!r}: {full} has {frames} samples, "
                            f"the manifest says {row.num_samples}")


def ladders(rows: list[ManifestRow]) -> dict[tuple[str, str], list[float]]:
    """(reference, family) -> sorted distinct levels: what each track walks."""
    out: dict[tuple[str, str], set[float]] = {}
    for r in rows:
        if r.family != REFERENCE_FAMILY:
            out.setdefault((r.reference, r.family), set()).add(r.level)
    return {k: sorted(v) for k, v in out.items()}


def check_recruitment_settings(*, target_participants: Any = None,
                               prolific_screened_out_code: Any = None) -> None:
    """The settings ``recruitment.prepare_new_experiment`` stores, checked against their columns.

    The CLI and the admin API call this with ``create_experiment`` so both refuse the
    same values, on SQLite and PostgreSQL alike, before anything is inserted.

    Raises:
        ValueError: naming the setting (an INTEGER target outside [1, 2**31 - 1], a code
            longer than its 64-character column or holding a NUL).
    """
    if target_participants is not None and (isinstance(target_participants, bool)
                                            or not isinstance(target_participants, int)
                                            or not 1 <= target_participants <= INT32_MAX):
        raise ValueError(f"target_participants must be an integer in [1, {INT32_MAX}] or None, "
                         f"got {target_participants!r}")
    if prolific_screened_out_code is not None:
        check_text("prolific_screened_out_code", prolific_screened_out_code, CODE_CHARS)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64]
    return slug or "experiment"


def create_experiment(
    db_session: DbSession,
    manifest: str | Path,
    *,
    procedure: str | None = None,
    name: str | None = None,
    procedure_config: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    test_type: str = "same_different",
    reward_cents: int | None = None,
    target_judgments: int | None = None,
    prolific_completion_code: str | None = None,
    verify_hashes: bool = False,
    max_sessions_per_worker: int | None = 1,
    mturk_environment: str | None = None,
) -> Experiment:
    """Validate everything, then insert the experiment and its stimuli (caller commits).

    ``max_sessions_per_worker``: sessions one worker ID may hold (default 1: no repeat
    participation; None: no limit). ``mturk_environment``: "sandbox" or "production"
    when the study runs on MTurk (``mturk create-hits`` records it too).

    Raises:
        ManifestError: a bad manifest row, a missing or undecodable file.
        ValueError: bad procedure / flow settings or the two options above.
    """
    from .platforms.identity import MTURK_ENVIRONMENTS

    if name is not None:
        check_text("name", name, NAME_CHARS)
    if prolific_completion_code is not None:
        check_text("prolific_completion_code", prolific_completion_code, CODE_CHARS)
    if not isinstance(verify_hashes, bool):
        raise ValueError(f"verify_hashes must be true or false, got {verify_hashes!r}")  # noqa: TRY004
    if max_sessions_per_worker is not None and (
            isinstance(max_sessions_per_worker, bool) or not isinstance(max_sessions_per_worker, int)
            or not 1 <= max_sessions_per_worker <= 1000):
        raise ValueError(f"max_sessions_per_worker must be an integer in [1, 1000] or None (no limit), "
                         f"got {max_sessions_per_worker!r}")
    for label, value in (("reward_cents", reward_cents), ("target_judgments", target_judgments)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= INT32_MAX):
            raise ValueError(f"{label} must be an integer in [0, {INT32_MAX}] or None, got {value!r}")
    if mturk_environment is not None and (not isinstance(mturk_environment, str)
                                          or mturk_environment not in MTURK_ENVIRONMENTS):
        raise ValueError(f"mturk_environment must be one of {list(MTURK_ENVIRONMENTS)}, got {mturk_environment!r}")
    from .flow_config import DEFAULT_PROCEDURE, FlowConfig  # late: flow_config imports procedures

    if not isinstance(test_type, str) or test_type not in DEFAULT_PROCEDURE:
        raise ValueError(f"unknown test type {test_type!r}; choose from {sorted(DEFAULT_PROCEDURE)}")
    procedure = procedure or DEFAULT_PROCEDURE[test_type]
    manifest = Path(manifest).resolve()
    rows = read_manifest(manifest, verify_hashes=verify_hashes)
    FlowConfig.from_dict(config).validate_for(procedure, procedure_config or {}, ladders(rows), test_type)
    # The length estimate (a simulation: seconds for long procedures) before the first
    # database statement: on SQLite that statement opens the write transaction, which
    # every participant's answer would wait behind.
    from .estimates import study_estimate

    estimate = study_estimate(procedure, procedure_config or {}, FlowConfig.from_dict(config), ladders(rows),
                              test_type, sum(r.num_samples / r.sample_rate for r in rows) / max(1, len(rows)))
    name = name or manifest.parent.name
    slug = slugify(name)
    if db_session.scalar(select(Experiment.id).where(Experiment.slug == slug)) is not None:
        raise ManifestError(f"an experiment named {slug!r} already exists; pass another --name")
    experiment = Experiment(
        slug=slug, name=name, test_type=test_type, status="active",
        manifest_path=str(manifest), audio_root=str(manifest.parent),
        procedure=procedure, procedure_config=dict(procedure_config or {}),
        config=dict(config or {}), reward_cents=reward_cents,
        target_judgments=target_judgments, prolific_completion_code=prolific_completion_code,
        # null(): an explicit NULL (no limit), not the column's default of 1
        max_sessions_per_worker=null() if max_sessions_per_worker is None else max_sessions_per_worker,
        mturk_environment=mturk_environment, estimate=estimate,
    )
    db_session.add(experiment)
    db_session.flush()
    db_session.execute(insert(Stimulus), [
        {"experiment_id": experiment.id, **row.__dict__} for row in rows
    ])
    return experiment

"""Turn a perturbation manifest (manifest.csv) into an experiment.

The manifest is read by ``perturbations.manifest`` (the format's one reader: its
columns, rows and ``ManifestError``); this module adds what creating an experiment
needs on top: the values fit the database's columns (so that SQLite, which does not
enforce sizes, and PostgreSQL refuse the same rows with the same message), the files
lie inside the manifest's folder, exist and decode with the row's sample rate and
length, and there is something to test. Every row is validated before anything is
written, so a bad manifest creates nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import insert, null, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import scoped_session

from perturbations.manifest import (
    REFERENCE_FAMILY,
    REQUIRED_COLUMNS,
    ManifestError,
    ManifestRow,
    manifest_error,
    verify_files,
)
from perturbations.manifest import read_manifest as read_manifest_rows

from .models import Experiment, Stimulus

__all__ = [
    "ManifestError",
    "ManifestRow",
    "check_audio",
    "check_recruitment_settings",
    "check_text",
    "create_experiment",
    "ladders",
    "read_manifest",
    "slugify",
]

# Integers the database stores as BIGINT (seeds from perturbations.derive_seed are 63-bit).
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1  # rewards and targets: INTEGER columns
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# Column sizes of the tables (listening_test.schema: stimuli, experiments): checked before
# insert so that SQLite (which does not enforce them) and PostgreSQL (which raises
# DataError) refuse the same values with the same message.
STIMULUS_ID_CHARS = 200  # stimuli.stimulus_id, stimuli.reference
FAMILY_CHARS = 64  # stimuli.family
PATH_CHARS = 4096  # stimuli.path (TEXT; a sane bound)
NAME_CHARS = 200  # experiments.name
CODE_CHARS = 64  # experiments.prolific_completion_code / prolific_screened_out_code
# The columns of ``stimuli`` a manifest row fills.
STIMULUS_COLUMNS = REQUIRED_COLUMNS


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


def _check_fits(row: ManifestRow, where: str) -> None:
    """The row's values fit the ``stimuli`` columns and its path stays inside the manifest's folder.

    Raises:
        ManifestError: naming ``where``, the row's line and the column.
    """

    def fail(column: str, reason: str) -> ManifestError:
        return manifest_error(where, reason, line=row.line, field=column)

    for column, size in (
        ("stimulus_id", STIMULUS_ID_CHARS),
        ("reference", STIMULUS_ID_CHARS),
        ("family", FAMILY_CHARS),
        ("path", PATH_CHARS),
    ):
        try:
            check_text(column, getattr(row, column), size)
        except ValueError as error:
            raise fail(column, str(error)) from None
    for column, top in (("sample_rate", INT32_MAX), ("num_samples", INT64_MAX), ("seed", INT64_MAX)):
        value = getattr(row, column)
        if value is not None and value > top:
            raise fail(column, f"must be an integer in [{0 if column == 'seed' else 1}, {top}], got {value}")
    # A symbolic link may still lead outside the folder the experiment serves from.
    root = Path(where).parent
    if not (root / row.path).resolve().is_relative_to(root):
        raise fail("path", f"{row.path!r} points outside the manifest's folder")


def read_manifest(path: str | Path, *, check_files: bool = True, verify_hashes: bool = False) -> list[ManifestRow]:
    """The rows of ``path`` (``perturbations.manifest.read_manifest``), checked for an experiment.

    On top of the format's rules: the values fit the database columns, there is at
    least one perturbed stimulus, and (``check_files``) every file lies inside the
    manifest's folder, exists and decodes with its row's sample rate and length;
    ``verify_hashes`` also compares every file's sha256 with its row.

    Raises:
        ManifestError: the first problem, naming the file, line and column where it has them.
    """
    path = Path(path).resolve()
    where = str(path)
    root = path.parent
    rows = read_manifest_rows(path, check_row=_check_fits)
    if not rows:
        raise manifest_error(where, "no stimuli")
    for row in rows:
        if check_files and not (root / row.path).is_file():
            raise manifest_error(where, f"file not found: {root / row.path}", line=row.line, field="path")
    if not any(not r.is_reference for r in rows):
        raise manifest_error(where, "no perturbed stimuli, only references")
    if check_files:
        for row in rows:
            check_audio(root / row.path, row, where)
    if verify_hashes:
        verify_files(rows, root, where)
    return rows


def check_audio(full: Path, row: ManifestRow, where: str | None = None) -> None:
    """Decode ``full`` end to end (soundfile) and compare it with its manifest row.

    ``where``: the manifest, named first in the message (with the row's line).

    Raises:
        ManifestError: the file does not decode, or its sample rate or length differs
            from the row's ``sample_rate`` / ``num_samples``; the message names the file.
    """
    import soundfile as sf

    def fail(column: str, reason: str) -> ManifestError:
        reason = f"stimulus {row.stimulus_id!r}: {full} {reason}"
        if where is None:
            return ManifestError(reason, line=row.line, field=column)
        return manifest_error(where, reason, line=row.line, field=column)

    try:
        with sf.SoundFile(str(full)) as handle:
            rate, frames = handle.samplerate, handle.frames
            for _block in handle.blocks(blocksize=1 << 16, dtype="float32"):
                pass  # decode every frame: a truncated or corrupt file fails here, not mid-study
    except (RuntimeError, OSError, sf.LibsndfileError) as error:
        raise fail("path", f"does not decode as audio ({error})") from None
    if rate != row.sample_rate:
        raise fail("sample_rate", f"is {rate} Hz, the manifest says {row.sample_rate}")
    if frames != row.num_samples:
        raise fail("num_samples", f"has {frames} samples, the manifest says {row.num_samples}")


def ladders(rows: list[ManifestRow]) -> dict[tuple[str, str], list[float]]:
    """(reference, family) -> sorted distinct levels: what each track walks."""
    out: dict[tuple[str, str], set[float]] = {}
    for r in rows:
        if r.family != REFERENCE_FAMILY:
            out.setdefault((r.reference, r.family), set()).add(r.level)
    return {k: sorted(v) for k, v in out.items()}


def check_recruitment_settings(*, target_participants: Any = None, prolific_screened_out_code: Any = None) -> None:
    """The settings ``recruitment.prepare_new_experiment`` stores, checked against their columns.

    The CLI and the admin API call this with ``create_experiment`` so both refuse the
    same values, on SQLite and PostgreSQL alike, before anything is inserted.

    Raises:
        ValueError: naming the setting (an INTEGER target outside [1, 2**31 - 1], a code
            longer than its 64-character column or holding a NUL).
    """
    if target_participants is not None and (
        isinstance(target_participants, bool)
        or not isinstance(target_participants, int)
        or not 1 <= target_participants <= INT32_MAX
    ):
        raise ValueError(
            f"target_participants must be an integer in [1, {INT32_MAX}] or None, got {target_participants!r}"
        )
    if prolific_screened_out_code is not None:
        check_text("prolific_screened_out_code", prolific_screened_out_code, CODE_CHARS)


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64]
    return slug or "experiment"


def create_experiment(
    db_session: DbSession | scoped_session[Any],
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
        isinstance(max_sessions_per_worker, bool)
        or not isinstance(max_sessions_per_worker, int)
        or not 1 <= max_sessions_per_worker <= 1000
    ):
        raise ValueError(
            f"max_sessions_per_worker must be an integer in [1, 1000] or None (no limit), "
            f"got {max_sessions_per_worker!r}"
        )
    for label, value in (("reward_cents", reward_cents), ("target_judgments", target_judgments)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT32_MAX):
            raise ValueError(f"{label} must be an integer in [0, {INT32_MAX}] or None, got {value!r}")
    if mturk_environment is not None and (
        not isinstance(mturk_environment, str) or mturk_environment not in MTURK_ENVIRONMENTS
    ):
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

    estimate = study_estimate(
        procedure,
        procedure_config or {},
        FlowConfig.from_dict(config),
        ladders(rows),
        test_type,
        sum(r.num_samples / r.sample_rate for r in rows) / max(1, len(rows)),
    )
    name = name or manifest.parent.name
    slug = slugify(name)
    if db_session.scalar(select(Experiment.id).where(Experiment.slug == slug)) is not None:
        raise ManifestError(f"an experiment named {slug!r} already exists; pass another --name")
    experiment = Experiment(
        slug=slug,
        name=name,
        test_type=test_type,
        status="active",
        manifest_path=str(manifest),
        audio_root=str(manifest.parent),
        procedure=procedure,
        procedure_config=dict(procedure_config or {}),
        config=dict(config or {}),
        reward_cents=reward_cents,
        target_judgments=target_judgments,
        prolific_completion_code=prolific_completion_code,
        # null(): an explicit NULL (no limit), not the column's default of 1
        max_sessions_per_worker=null() if max_sessions_per_worker is None else max_sessions_per_worker,
        mturk_environment=mturk_environment,
        estimate=estimate,
    )
    db_session.add(experiment)
    db_session.flush()
    db_session.execute(
        insert(Stimulus),
        [
            {"experiment_id": experiment.id, **{column: getattr(row, column) for column in STIMULUS_COLUMNS}}
            for row in rows
        ],
    )
    return experiment

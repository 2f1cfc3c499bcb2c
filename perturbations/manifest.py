"""manifest.csv: one row per stimulus, the contract between the engine and everything downstream.

This module is the only reader and writer of the format: ``perturbations generate`` writes
it, ``listening_test experiment create`` reads it through ``read_manifest`` (and adds the
checks of its own database columns), and so does every other package.

Columns (DESIGN.md), in this order:

- ``stimulus_id``: unique, filesystem-safe key of the row ([A-Za-z0-9._-]).
- ``reference``: the ``stimulus_id`` of this row's reference row (a reference row points at itself).
- ``path``: the audio file, POSIX-style and relative to the manifest's folder (no ``..``).
- ``family``: the perturbation family, or ``reference``.
- ``level``: 0..100 (references: 0).
- ``params``: JSON object of physical parameters, units in the key names (``snr_db``);
  strict JSON (no NaN or Infinity).
- ``seed``: the per-stimulus seed the parameters were drawn from (a non-negative integer),
  or empty for stimuli drawn from no seed (e.g. the system outputs of an A/B set).
- ``sample_rate``, ``num_samples``: of the file at ``path``; a stimulus has the same
  values as its reference (sample-aligned).
- ``sha256``: of the bytes of the file at ``path``.

Extra columns written by the engine (readers must ignore unknown columns):
``reference_path`` (the reference's ``path``, for readers that want pairs without a join),
``loudness_lufs`` (ITU-R BS.1770 of the written audio), ``source`` (the input file the reference
came from, relative to the ``--input`` folder), ``speaker`` and ``jndlab_version``.

Every problem is a ``ManifestError`` whose message names the file, the line (header = 1)
and the column: ``FILE: line 4, column 'level': must lie in [0, 100], got '101'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from perturbations.files import atomic_write_text

REQUIRED_COLUMNS = (
    "stimulus_id",
    "reference",
    "path",
    "family",
    "level",
    "params",
    "seed",
    "sample_rate",
    "num_samples",
    "sha256",
)
EXTRA_COLUMNS = ("reference_path", "loudness_lufs", "source", "speaker", "jndlab_version")
COLUMNS = REQUIRED_COLUMNS + EXTRA_COLUMNS
REFERENCE_FAMILY = "reference"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._\-]+$")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and the column.

    ``line`` (the manifest's line number, header = 1) and ``field`` (the column, or a
    setting of the caller) are set when the problem has one; both are None otherwise
    (a missing file, rows built in memory).
    """

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.line = line
        self.field = field


def manifest_error(where: str, reason: str, *, line: int | None = None, field: str | None = None) -> ManifestError:
    """A ``ManifestError`` whose message is ``WHERE: line N, column 'FIELD': REASON``.

    ``where`` names the manifest (its path); the line and column parts are left out
    when unknown. Callers that add checks of their own (``listening_test.manifest_import``)
    use it so that every manifest problem reads the same.
    """
    place = []
    if line is not None:
        place.append(f"line {line}")
    if field is not None:
        place.append(f"column {field!r}")
    prefix = f"{where}: {', '.join(place)}: " if place else f"{where}: "
    return ManifestError(prefix + reason, line=line, field=field)


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row, parsed and checked; ``line`` is where it was read (None: built in memory)."""

    stimulus_id: str
    reference: str
    path: str  # POSIX, relative to the manifest's folder
    family: str
    level: float
    params: dict[str, Any]
    seed: int | None
    sample_rate: int
    num_samples: int
    sha256: str
    reference_path: str = ""
    loudness_lufs: float | None = None
    source: str = ""
    speaker: str = ""
    jndlab_version: str = ""
    extras: dict[str, str] = field(default_factory=dict, compare=False)
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def is_reference(self) -> bool:
        return self.family == REFERENCE_FAMILY

    def resolve(self, manifest_dir: str | os.PathLike) -> Path:
        """The absolute audio path, given the folder that holds manifest.csv."""
        return Path(manifest_dir) / PurePosixPath(self.path)

    def to_csv_dict(self) -> dict[str, str]:
        """The row as manifest.csv cells (``COLUMNS`` -> text), canonical number and JSON formats.

        Raises ``ValueError`` when ``params`` holds NaN or an infinity (strict JSON).
        """
        return {
            "stimulus_id": self.stimulus_id,
            "reference": self.reference,
            "path": self.path,
            "family": self.family,
            "level": format_level(self.level),
            "params": params_json(self.params),
            "seed": "" if self.seed is None else str(int(self.seed)),
            "sample_rate": str(int(self.sample_rate)),
            "num_samples": str(int(self.num_samples)),
            "sha256": self.sha256,
            "reference_path": self.reference_path,
            # two decimals: far below the 0.5 LU tolerance, and stable across machines
            "loudness_lufs": "" if self.loudness_lufs is None else f"{self.loudness_lufs:.2f}",
            "source": self.source,
            "speaker": self.speaker,
            "jndlab_version": self.jndlab_version,
        }


def params_json(params: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, no spaces, so identical params give identical bytes."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)


def format_level(level: float) -> str:
    """A level (0-100) as its shortest text: 50.0 -> "50", 16.67 -> "16.67"."""
    return f"{float(level):g}"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 of the file's bytes as 64 lower-case hex digits (read ``chunk_bytes`` at a time).

    Raises ``OSError`` when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sort_key(row: ManifestRow) -> tuple:
    """Canonical order: by reference, the reference row first, then family, then level."""
    return (row.reference, not row.is_reference, row.family, float(row.level), row.stimulus_id)


def render_manifest(rows: Iterable[ManifestRow]) -> str:
    """manifest.csv's text: the header (``COLUMNS``), then the rows in canonical order
    (``sort_key``), '\\n' line ends. Raises ``ValueError`` for params with NaN or infinities."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=sort_key):
        writer.writerow(row.to_csv_dict())
    return buffer.getvalue()


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> Path:
    """Write rows in canonical order, atomically (a killed run never leaves half a manifest).

    Raises ``ManifestError`` when the rows break a cross-row rule (``check_rows``; nothing
    is written then) and ``OSError`` when the file cannot be written.
    """
    path = Path(path)
    rows = list(rows)
    check_rows(rows, str(path))
    return atomic_write_text(path, render_manifest(rows))


def read_manifest(
    path: str | os.PathLike, *, check_files: bool = False, check_row: Callable[[ManifestRow, str], None] | None = None
) -> list[ManifestRow]:
    """Read and validate ``path``, rows in file order.

    ``check_files``: also check every file exists with its sha256 (``verify_files``).
    ``check_row(row, where)``: a reader's own rule for single rows (``where`` names the
    manifest), run on each row as it is parsed, before the cross-row rules; it raises
    ``ManifestError`` (see ``manifest_error``).

    Raises ``ManifestError`` naming the file, line and column of the first problem found:
    a missing or unreadable file, a missing required column, a ragged line, a bad cell
    (see the module docstring), a row ``check_row`` refuses, or a broken cross-row rule
    (``check_rows``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise manifest_error(str(path), "manifest not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise manifest_error(str(path), f"cannot read the manifest as UTF-8 text ({error})") from None
    rows = []
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise manifest_error(str(path), f"missing required column(s): {', '.join(missing)}", line=1)
        for record in reader:
            if None in record or any(value is None for value in record.values()):
                raise manifest_error(
                    str(path), f"wrong number of fields (expected {len(header)})", line=reader.line_num
                )
            row = _parse_row(record, str(path), reader.line_num)
            if check_row is not None:
                check_row(row, str(path))
            rows.append(row)
    except csv.Error as error:
        raise manifest_error(str(path), f"not a readable CSV file ({error})") from None
    check_rows(rows, str(path))
    if check_files:
        verify_files(rows, path.parent, str(path))
    return rows


def row_from_dict(record: dict[str, Any]) -> ManifestRow:
    """Rebuild a row from ``to_csv_dict`` output (as kept in the engine's journal).

    Raises ``ManifestError`` (a ``ValueError``) when a value breaks the format's rules.
    """
    return _parse_row({key: str(value) for key, value in record.items()}, "journal", None)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_row(record: dict[str, str], where: str, line: int | None) -> ManifestRow:
    def fail(column: str, reason: str) -> ManifestError:
        return manifest_error(where, reason, line=line, field=column)

    def text(column: str) -> str:
        value = record.get(column) or ""
        if value == "":
            raise fail(column, "is empty")
        return value

    def integer(column: str, minimum: int) -> int:
        raw = text(column)
        try:
            value = int(raw)
        except ValueError:
            raise fail(column, f"must be an integer, got {raw!r}") from None
        if value < minimum:
            raise fail(column, f"must be >= {minimum}, got {value}")
        return value

    stimulus_id = text("stimulus_id")
    if not _SAFE_ID.match(stimulus_id):
        raise fail("stimulus_id", f"{stimulus_id!r} has characters outside [A-Za-z0-9._-]")
    reference = text("reference")
    family = text("family")
    raw_level = text("level")
    try:
        level = float(raw_level)
    except ValueError:
        raise fail("level", f"must be a number, got {raw_level!r}") from None
    if not (0.0 <= level <= 100.0):  # NaN and infinities fail too
        raise fail("level", f"must lie in [0, 100], got {raw_level!r}")
    raw_params = text("params")
    try:
        params = json.loads(raw_params, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise fail("params", f"is not valid JSON ({error.msg})") from None
    except (ValueError, RecursionError) as error:
        raise fail("params", f"is not valid JSON ({error or 'nested too deeply'})") from None
    if not isinstance(params, dict):
        raise fail("params", f"must be a JSON object, got {type(params).__name__}")
    rel = text("path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise fail("path", f"{rel!r} must be relative to the manifest's folder (POSIX, no '..')")
    raw_digest = text("sha256")
    digest = raw_digest.lower()
    if not _SHA256.match(digest):
        raise fail("sha256", f"must be 64 hex digits, got {raw_digest[:80]!r}")
    seed = None if (record.get("seed") or "") == "" else integer("seed", 0)
    raw_loudness = record.get("loudness_lufs", "") or ""
    loudness = None
    if raw_loudness:
        try:
            loudness = float(raw_loudness)
        except ValueError:
            raise fail("loudness_lufs", f"must be a number, got {raw_loudness!r}") from None
        if not math.isfinite(loudness):
            raise fail("loudness_lufs", f"must be finite, got {raw_loudness!r}")
    known = set(COLUMNS)
    return ManifestRow(
        stimulus_id=stimulus_id,
        reference=reference,
        path=rel,
        family=family,
        level=level,
        params=params,
        seed=seed,
        sample_rate=integer("sample_rate", 1),
        num_samples=integer("num_samples", 1),
        sha256=digest,
        reference_path=record.get("reference_path", "") or "",
        loudness_lufs=loudness,
        source=record.get("source", "") or "",
        speaker=record.get("speaker", "") or "",
        jndlab_version=record.get("jndlab_version", "") or "",
        extras={key: value for key, value in record.items() if key not in known and key is not None},
        line=line,
    )


def check_rows(rows: list[ManifestRow], where: str) -> None:
    """Cross-row rules: unique ids and paths; a reference row points at itself with level 0;
    every other row names a reference row and is sample-aligned with it (same
    ``sample_rate`` and ``num_samples``: a different length or rate would give the answer
    away before anyone listens).

    Raises ``ManifestError`` naming ``where`` (the manifest), the row's line and column.
    """
    by_id: dict[str, ManifestRow] = {}
    paths: dict[str, str] = {}

    def fail(row: ManifestRow, column: str, reason: str) -> ManifestError:
        return manifest_error(where, reason, line=row.line, field=column)

    for row in rows:
        if row.stimulus_id in by_id:
            raise fail(row, "stimulus_id", f"duplicate stimulus_id {row.stimulus_id!r}")
        if row.path in paths:
            raise fail(row, "path", f"{row.stimulus_id!r} and {paths[row.path]!r} share the path {row.path!r}")
        by_id[row.stimulus_id] = row
        paths[row.path] = row.stimulus_id
    for row in rows:
        if row.is_reference:
            if row.reference != row.stimulus_id:
                raise fail(
                    row,
                    "reference",
                    f"reference row {row.stimulus_id!r} must name itself as its reference, got {row.reference!r}",
                )
            if row.level != 0:
                raise fail(row, "level", f"reference row {row.stimulus_id!r} must have level 0, got {row.level:g}")
            continue
        target = by_id.get(row.reference)
        if target is None:
            raise fail(row, "reference", f"{row.stimulus_id!r} names reference {row.reference!r}, which has no row")
        if not target.is_reference:
            raise fail(row, "reference", f"{row.stimulus_id!r} names {row.reference!r}, which is not a reference row")
        for column in ("sample_rate", "num_samples"):
            mine, theirs = getattr(row, column), getattr(target, column)
            if mine != theirs:
                at = f" (line {target.line})" if target.line is not None else ""
                raise fail(
                    row,
                    column,
                    f"stimulus {row.stimulus_id!r} has {column}={mine} but its reference "
                    f"{target.stimulus_id!r}{at} has {theirs}; a stimulus must be "
                    "sample-aligned with its reference",
                )


def verify_files(rows: list[ManifestRow], manifest_dir: str | os.PathLike, where: str) -> None:
    """Check that every row's file exists under ``manifest_dir`` with the row's sha256.

    Raises ``ManifestError`` naming ``where`` (the manifest), the row's line and stimulus.
    """
    for row in rows:
        audio_path = row.resolve(manifest_dir)
        if not audio_path.is_file():
            raise manifest_error(
                where, f"stimulus {row.stimulus_id!r}: file {row.path!r} does not exist", line=row.line, field="path"
            )
        actual = sha256_file(audio_path)
        if actual != row.sha256:
            raise manifest_error(
                where,
                f"stimulus {row.stimulus_id!r}: {row.path!r} has sha256 {actual}, the manifest says {row.sha256}",
                line=row.line,
                field="sha256",
            )

"""manifest.csv: one row per stimulus, the contract between the engine and everything downstream.

Columns (DESIGN.md), in this order:

- ``stimulus_id``: unique, filesystem-safe key of the row.
- ``reference``: the ``stimulus_id`` of this row's reference row (a reference row points at itself).
- ``path``: the audio file, POSIX-style and relative to the manifest's folder.
- ``family``: the perturbation family, or ``reference``.
- ``level``: 0..100 (references: 0).
- ``params``: JSON object of physical parameters, units in the key names (``snr_db``).
- ``seed``: the per-stimulus seed the parameters were drawn from.
- ``sample_rate``, ``num_samples``: of the file at ``path``.
- ``sha256``: of the bytes of the file at ``path``.

Extra columns written by the engine (readers must ignore unknown columns):
``reference_path`` (the reference's ``path``, for readers that want pairs without a join),
``loudness_lufs`` (ITU-R BS.1770 of the written audio), ``source`` (the input file the reference
came from, relative to the ``--input`` folder), ``speaker`` and ``jndlab_version``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from perturbations.files import atomic_path

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
    """A manifest that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ManifestRow:
    stimulus_id: str
    reference: str
    path: str  # POSIX, relative to the manifest's folder
    family: str
    level: float
    params: dict[str, Any]
    seed: int
    sample_rate: int
    num_samples: int
    sha256: str
    reference_path: str = ""
    loudness_lufs: float | None = None
    source: str = ""
    speaker: str = ""
    jndlab_version: str = ""
    extras: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_reference(self) -> bool:
        return self.family == REFERENCE_FAMILY

    def resolve(self, manifest_dir: str | os.PathLike) -> Path:
        """The absolute audio path, given the folder that holds manifest.csv."""
        return Path(manifest_dir) / PurePosixPath(self.path)

    def to_csv_dict(self) -> dict[str, str]:
        return {
            "stimulus_id": self.stimulus_id,
            "reference": self.reference,
            "path": self.path,
            "family": self.family,
            "level": format_level(self.level),
            "params": params_json(self.params),
            "seed": str(int(self.seed)),
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
    return f"{float(level):g}"


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sort_key(row: ManifestRow) -> tuple:
    """Canonical order: by reference, the reference row first, then family, then level."""
    return (row.reference, not row.is_reference, row.family, float(row.level), row.stimulus_id)


def render_manifest(rows: Iterable[ManifestRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=sort_key):
        writer.writerow(row.to_csv_dict())
    return buffer.getvalue()


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow]) -> Path:
    """Write rows in canonical order, atomically (a killed run never leaves half a manifest)."""
    path = Path(path)
    rows = list(rows)
    check_rows(rows, str(path))
    text = render_manifest(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def read_manifest(path: str | os.PathLike, *, check_files: bool = False) -> list[ManifestRow]:
    """Read and validate ``path``. ``check_files``: also check every file exists with its sha256.

    Raises ``ManifestError`` with ``FILE:LINE: reason`` on the first problem found.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read manifest ({error})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ManifestError(f"{path}:1: missing required column(s): {', '.join(missing)}")
    rows = []
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record or any(value is None for value in record.values()):
            raise ManifestError(f"{where}: wrong number of fields (expected {len(header)})")
        rows.append(_parse_row(record, where))
    check_rows(rows, str(path))
    if check_files:
        verify_files(rows, path.parent, str(path))
    return rows


def row_from_dict(record: dict[str, Any]) -> ManifestRow:
    """Rebuild a row from ``to_csv_dict`` output (as kept in the engine's journal)."""
    return _parse_row({key: str(value) for key, value in record.items()}, "journal")


def _parse_row(record: dict[str, str], where: str) -> ManifestRow:
    def text(column: str, *, required: bool = True) -> str:
        value = record.get(column, "")
        if required and value == "":
            raise ManifestError(f"{where}: column {column!r} is empty")
        return value

    def integer(column: str, minimum: int) -> int:
        raw = text(column)
        try:
            value = int(raw)
        except ValueError:
            raise ManifestError(f"{where}: column {column!r} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ManifestError(f"{where}: column {column!r} must be >= {minimum}, got {value}")
        return value

    stimulus_id = text("stimulus_id")
    if not _SAFE_ID.match(stimulus_id):
        raise ManifestError(f"{where}: stimulus_id {stimulus_id!r} has characters outside [A-Za-z0-9._-]")
    raw_level = text("level")
    try:
        level = float(raw_level)
    except ValueError:
        raise ManifestError(f"{where}: level must be a number, got {raw_level!r}") from None
    if not (0.0 <= level <= 100.0):
        raise ManifestError(f"{where}: level must lie in [0, 100], got {raw_level}")
    try:
        params = json.loads(text("params"))
    except json.JSONDecodeError as error:
        raise ManifestError(f"{where}: params is not valid JSON ({error.msg})") from None
    if not isinstance(params, dict):
        raise ManifestError(f"{where}: params must be a JSON object, got {type(params).__name__}")
    rel = text("path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ManifestError(f"{where}: path {rel!r} must be relative to the manifest's folder (POSIX, no '..')")
    digest = text("sha256").lower()
    if not _SHA256.match(digest):
        raise ManifestError(f"{where}: sha256 must be 64 hex digits, got {record.get('sha256')!r}")
    raw_loudness = record.get("loudness_lufs", "") or ""
    loudness = None
    if raw_loudness:
        try:
            loudness = float(raw_loudness)
        except ValueError:
            raise ManifestError(f"{where}: loudness_lufs must be a number, got {raw_loudness!r}") from None
        if not math.isfinite(loudness):
            raise ManifestError(f"{where}: loudness_lufs must be finite, got {raw_loudness!r}")
    known = set(COLUMNS)
    return ManifestRow(
        stimulus_id=stimulus_id,
        reference=text("reference"),
        path=rel,
        family=text("family"),
        level=level,
        params=params,
        seed=integer("seed", 0),
        sample_rate=integer("sample_rate", 1),
        num_samples=integer("num_samples", 1),
        sha256=digest,
        reference_path=record.get("reference_path", "") or "",
        loudness_lufs=loudness,
        source=record.get("source", "") or "",
        speaker=record.get("speaker", "") or "",
        jndlab_version=record.get("jndlab_version", "") or "",
        extras={key: value for key, value in record.items() if key not in known and key is not None},
    )


def check_rows(rows: list[ManifestRow], where: str) -> None:
    """Cross-row rules: unique ids and paths, every stimulus points at a reference row."""
    by_id: dict[str, ManifestRow] = {}
    paths: dict[str, str] = {}
    for row in rows:
        if row.stimulus_id in by_id:
            raise ManifestError(f"{where}: duplicate stimulus_id {row.stimulus_id!r}")
        if row.path in paths:
            raise ManifestError(
                f"{where}: {row.stimulus_id!r} and {paths[row.path]!r} share the path {row.path!r}"
            )
        by_id[row.stimulus_id] = row
        paths[row.path] = row.stimulus_id
    for row in rows:
        if row.is_reference:
            if row.reference != row.stimulus_id or row.level != 0:
                raise ManifestError(
                    f"{where}: reference row {row.stimulus_id!r} must have reference = its own id and level 0"
                )
            continue
        target = by_id.get(row.reference)
        if target is None:
            raise ManifestError(f"{where}: {row.stimulus_id!r} names reference {row.reference!r}, which has no row")
        if not target.is_reference:
            raise ManifestError(f"{where}: {row.stimulus_id!r} names {row.reference!r}, which is not a reference row")
        if target.sample_rate != row.sample_rate or target.num_samples != row.num_samples:
            raise ManifestError(
                f"{where}: {row.stimulus_id!r} differs from its reference in sample_rate or num_samples"
            )


def verify_files(rows: list[ManifestRow], manifest_dir: str | os.PathLike, where: str) -> None:
    for row in rows:
        audio_path = row.resolve(manifest_dir)
        if not audio_path.is_file():
            raise ManifestError(f"{where}: {row.stimulus_id!r}: file {row.path!r} does not exist")
        actual = sha256_file(audio_path)
        if actual != row.sha256:
            raise ManifestError(f"{where}: {row.stimulus_id!r}: {row.path!r} has sha256 {actual}, manifest says {row.sha256}")

"""Read a perturbation manifest (manifest.csv) and turn it into an experiment.

The manifest format is defined in DESIGN.md. Every row is validated before
anything is written, so a bad manifest creates nothing.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session as DbSession

from .models import Experiment, Stimulus

REQUIRED_COLUMNS = (
    "stimulus_id", "reference", "path", "family", "level", "params",
    "seed", "sample_rate", "num_samples", "sha256",
)
REFERENCE_FAMILY = "reference"
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ManifestError(ValueError):
    """A manifest that cannot become an experiment; the message names the row and field."""


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
        return ManifestError(f"manifest line {line}, column {field!r}: {why}")

    try:
        level = float(raw["level"])
    except ValueError:
        raise fail("level", f"not a number: {raw['level']!r}") from None
    try:
        params = json.loads(raw["params"] or "{}")
    except json.JSONDecodeError as error:
        raise fail("params", f"not JSON ({error})") from None
    if not isinstance(params, dict):
        raise fail("params", "must be a JSON object")
    ints = {}
    for field in ("sample_rate", "num_samples"):
        try:
            ints[field] = int(raw[field])
        except ValueError:
            raise fail(field, f"not an integer: {raw[field]!r}") from None
    seed = None
    if raw["seed"] not in ("", None):
        try:
            seed = int(raw["seed"])
        except ValueError:
            raise fail("seed", f"not an integer: {raw['seed']!r}") from None
    rel = raw["path"]
    if not rel or Path(rel).is_absolute():
        raise fail("path", "must be a path relative to the manifest's folder")
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise fail("path", f"{rel!r} points outside the manifest's folder")
    if check_files and not full.is_file():
        raise fail("path", f"file not found: {full}")
    for field in ("stimulus_id", "reference", "family"):
        if not raw[field]:
            raise fail(field, "is empty")
    return ManifestRow(
        stimulus_id=raw["stimulus_id"], reference=raw["reference"], path=rel,
        family=raw["family"], level=level, params=params, seed=seed,
        sample_rate=ints["sample_rate"], num_samples=ints["num_samples"], sha256=raw["sha256"],
    )


def read_manifest(path: str | Path, *, check_files: bool = True, verify_hashes: bool = False) -> list[ManifestRow]:
    """Parse and validate ``path``; raise ``ManifestError`` on the first problem."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    root = path.parent
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing columns {missing}")
        rows = [_parse_row(i + 2, raw, root, check_files) for i, raw in enumerate(reader)]
    if not rows:
        raise ManifestError(f"{path}: no stimuli")
    seen: set[str] = set()
    for row in rows:
        if row.stimulus_id in seen:
            raise ManifestError(f"{path}: duplicate stimulus_id {row.stimulus_id!r}")
        seen.add(row.stimulus_id)
    references = {r.stimulus_id for r in rows if r.family == REFERENCE_FAMILY}
    for row in rows:
        if row.family != REFERENCE_FAMILY and row.reference not in references:
            raise ManifestError(f"{path}: stimulus {row.stimulus_id!r} names reference "
                                f"{row.reference!r}, which has no row with family=reference")
    if not any(r.family != REFERENCE_FAMILY for r in rows):
        raise ManifestError(f"{path}: no perturbed stimuli, only references")
    if verify_hashes:
        for row in rows:
            digest = hashlib.sha256((root / row.path).read_bytes()).hexdigest()
            if digest != row.sha256:
                raise ManifestError(f"{path}: sha256 mismatch for {row.path}")
    return rows


def ladders(rows: list[ManifestRow]) -> dict[tuple[str, str], list[float]]:
    """(reference, family) -> sorted distinct levels: what each track walks."""
    out: dict[tuple[str, str], set[float]] = {}
    for r in rows:
        if r.family != REFERENCE_FAMILY:
            out.setdefault((r.reference, r.family), set()).add(r.level)
    return {k: sorted(v) for k, v in out.items()}


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
) -> Experiment:
    """Validate everything, then insert the experiment and its stimuli (caller commits)."""
    from .flow_config import DEFAULT_PROCEDURE, FlowConfig  # late: flow_config imports procedures

    if test_type not in DEFAULT_PROCEDURE:
        raise ValueError(f"unknown test type {test_type!r}; choose from {sorted(DEFAULT_PROCEDURE)}")
    procedure = procedure or DEFAULT_PROCEDURE[test_type]
    manifest = Path(manifest).resolve()
    rows = read_manifest(manifest, verify_hashes=verify_hashes)
    FlowConfig.from_dict(config).validate_for(procedure, procedure_config or {}, ladders(rows), test_type)
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
    )
    db_session.add(experiment)
    db_session.flush()
    db_session.execute(insert(Stimulus), [
        {"experiment_id": experiment.id, **row.__dict__} for row in rows
    ])
    return experiment

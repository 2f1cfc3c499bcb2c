"""Exports of an experiment's judgments: every field as CSV, and DPAM triplets.

By default both exports hold the judgments of the workers the shared screening keeps
(``listening_test.screening``, the rules ``analysis`` applies); ``workers="all"``
exports everyone's. ``export_filename`` gives each variant its own file name.

One CSV layout serves both test types: same/different rows fill ``label``
(1 = "different"); A/B preference rows fill ``system_a``, ``system_b`` and
``preferred_system`` (the system of the clip the listener chose).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from sqlalchemy import select

from .db import db
from .dpam_triplets import triplet_line
from .judgments_query import iter_judgments
from .models import Experiment

CSV_COLUMNS = [
    "experiment_id",
    "participant_id",
    "platform",
    "platform_worker_id",
    "session_id",
    "assignment_id",
    "hit_id",
    "study_id",
    "stage",
    "screening_passed",
    "trial_id",
    "trial_index",
    "kind",
    "track_id",
    "reference",
    "family",
    "level",
    "reference_path",
    "test_path",
    "a_is_reference",
    "answer",
    "label",
    "expected_answer",
    "is_correct",
    "response_time_ms",
    "play_counts",
    "served_at",
    "answered_at",
    "client_info",
    "system_a",
    "system_b",
    "preferred_system",
]
WORKER_SETS = ("kept", "all")


def export_filename(slug: str, what: str, workers: str, kinds: tuple[str, ...] = ("main",)) -> str:
    """e.g. ``demo-triplets-kept.txt``, ``demo-triplets-all-with-catch.txt``, ``demo-judgments-kept.csv``."""
    extra = (
        ""
        if tuple(kinds) == ("main",) or what == "judgments"
        else "-with-" + "-".join(k.replace("catch_", "catch-") for k in kinds if k != "main")
    )
    suffix = "csv" if what == "judgments" else "txt"
    return f"{slug}-{what}-{workers}{extra}.{suffix}"


def _excluded(experiment_id: int, workers: str) -> set[tuple[str, str]]:
    if workers not in WORKER_SETS:
        raise ValueError(f"workers must be one of {WORKER_SETS}, got {workers!r}")
    if workers == "all":
        return set()
    from .stats import excluded_workers

    return {(platform, worker) for platform, _, worker in (w.partition(":") for w in excluded_workers(experiment_id))}


def _rows(experiment_id: int, kinds: tuple[str, ...] | None = None):
    """The experiment's judgments (``judgments_query.JUDGMENT_COLUMNS``), streamed on the
    request's connection, by session and trial index."""
    yield from iter_judgments(db.session.connection(), experiment_id=experiment_id, kinds=kinds or None)


_TRIPLET_LABELS = {"same": 0, "different": 1}  # DPAM: 0 same, 1 different


def _label(kind: str, answer: str) -> str:
    if kind == "screening" or answer not in ("same", "different"):
        return ""
    return "1" if answer == "different" else "0"


def ab_systems(spec: dict | None, answer: str) -> tuple[str, str, str]:
    """(system A, system B, preferred system) of an A/B trial; empty strings for other trials."""
    systems = (spec or {}).get("systems")
    if not systems or answer not in ("A", "B"):
        return "", "", ""
    return systems[0], systems[1], systems[0] if answer == "A" else systems[1]


def judgments_csv(experiment_id: int, workers: str = "kept") -> Iterator[str]:
    """CSV of every answer (``CSV_COLUMNS``) of the kept workers, or of all (``workers="all"``).

    Yields the text in pieces (the header first, then one row a piece); levels on the
    0-100 scale, ``response_time_ms`` in milliseconds, times ISO-8601 as stored (UTC).
    Runs inside an app context on the request's connection.

    Raises:
        ValueError: ``workers`` is not one of ``WORKER_SETS``.
    """
    excluded = _excluded(experiment_id, workers)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in _rows(experiment_id):
        if (r["platform"], r["worker_id"]) in excluded:
            continue
        writer.writerow(
            [
                r["experiment_id"],
                r["participant_id"],
                r["platform"],
                r["worker_id"],
                r["session"],
                r["assignment_id"],
                r["hit_id"],
                r["study_id"],
                r["session_stage"],
                r["screening_passed"],
                r["trial_id"],
                r["trial_index"],
                r["kind"],
                r["track_id"],
                r["reference"],
                r["family"],
                r["level"],
                r["reference_path"],
                r["test_path"],
                r["a_is_reference"],
                r["answer"],
                _label(r["kind"], r["answer"]),
                r["expected_answer"],
                r["is_correct"],
                r["response_time_ms"],
                json.dumps(r["play_counts"]),
                r["served_at"].isoformat(),
                r["answered_at"].isoformat(),
                json.dumps(r["client_info"], sort_keys=True),
                *ab_systems(r["trial_spec"], r["answer"]),
            ]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def triplets(
    experiment_id: int, kinds: tuple[str, ...] = ("main",), include_screened_out: bool = False, workers: str = "kept"
) -> Iterator[str]:
    """DPAM lines ``ref<TAB>perturbed<TAB>label`` (0 same, 1 different), paths relative to
    the manifest's folder; a 4th column carries the family (readers ignore extras).

    ``workers="kept"`` (default) leaves out the workers the shared screening excludes
    (a failed headphone screen is one of its reasons); ``"all"`` keeps everyone but
    screened-out sessions unless ``include_screened_out``. Yields one line a piece.

    Raises:
        ValueError: an A/B preference experiment (no same/different labels), or
            ``workers`` not one of ``WORKER_SETS``.
    """
    if db.session.scalar(select(Experiment.test_type).where(Experiment.id == experiment_id)) != "same_different":
        raise ValueError(
            "DPAM triplets come from same/different judgments; this experiment is an A/B "
            "preference test: export judgments.csv or run python -m analysis preference"
        )
    excluded = _excluded(experiment_id, workers)
    for r in _rows(experiment_id, kinds):
        if not include_screened_out and r["screening_passed"] is False:
            continue
        if (r["platform"], r["worker_id"]) in excluded:
            continue
        label = _TRIPLET_LABELS.get(r["answer"]) if r["kind"] != "screening" else None
        if label is None:  # not a same/different judgment: no DPAM label
            continue
        yield triplet_line(r["reference_path"], r["test_path"], label, r["family"])

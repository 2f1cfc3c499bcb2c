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
from sqlalchemy.orm import aliased

from .db import db
from .models import Experiment, Participant, Response, Session, Stimulus, Trial

CSV_COLUMNS = [
    "experiment_id", "participant_id", "platform", "platform_worker_id", "session_id",
    "assignment_id", "hit_id", "study_id", "stage", "screening_passed", "trial_id", "trial_index",
    "kind", "track_id", "reference", "family", "level", "reference_path", "test_path",
    "a_is_reference", "answer", "label", "expected_answer", "is_correct", "response_time_ms",
    "play_counts", "served_at", "answered_at", "client_info", "system_a", "system_b", "preferred_system",
]
PAIR_KINDS = ("main", "practice", "catch_identical", "catch_obvious")
WORKER_SETS = ("kept", "all")


def export_filename(slug: str, what: str, workers: str, kinds: tuple[str, ...] = ("main",)) -> str:
    """e.g. ``demo-triplets-kept.txt``, ``demo-triplets-all-with-catch.txt``, ``demo-judgments-kept.csv``."""
    extra = "" if tuple(kinds) == ("main",) or what == "judgments" else "-with-" + "-".join(
        k.replace("catch_", "catch-") for k in kinds if k != "main")
    suffix = "csv" if what == "judgments" else "txt"
    return f"{slug}-{what}-{workers}{extra}.{suffix}"


def _excluded(experiment_id: int, workers: str) -> set[tuple[str, str]]:
    if workers not in WORKER_SETS:
        raise ValueError(f"workers must be one of {WORKER_SETS}, got {workers!r}")
    if workers == "all":
        return set()
    from .stats import excluded_workers

    return {tuple(w.split(":", 1)) for w in excluded_workers(experiment_id)}


def _rows(experiment_id: int, kinds: tuple[str, ...] | None = None):
    ref, test = aliased(Stimulus), aliased(Stimulus)
    query = (
        select(Response, Trial, Session, Participant, ref.path.label("ref_path"),
               ref.stimulus_id.label("ref_id"), test.path.label("test_path"))
        .join(Trial, Trial.id == Response.trial_id)
        .join(Session, Session.id == Trial.session_id)
        .join(Participant, Participant.id == Session.participant_id)
        .outerjoin(ref, ref.id == Trial.reference_stimulus_id)
        .outerjoin(test, test.id == Trial.test_stimulus_id)
        .where(Session.experiment_id == experiment_id)
        .order_by(Session.id, Trial.trial_index)
    )
    if kinds:
        query = query.where(Trial.kind.in_(kinds))
    # Stream: a large study should not sit in memory at once.
    yield from db.session.execute(query.execution_options(yield_per=500))


def _label(trial: Trial, answer: str) -> str:
    if trial.kind == "screening" or answer not in ("same", "different"):
        return ""
    return "1" if answer == "different" else "0"


def ab_systems(spec: dict | None, answer: str) -> tuple[str, str, str]:
    """(system A, system B, preferred system) of an A/B trial; empty strings for other trials."""
    systems = (spec or {}).get("systems")
    if not systems or answer not in ("A", "B"):
        return "", "", ""
    return systems[0], systems[1], systems[0] if answer == "A" else systems[1]


def judgments_csv(experiment_id: int, workers: str = "kept") -> Iterator[str]:
    """CSV of every answer (``CSV_COLUMNS``) of the kept workers, or of all (``workers="all"``)."""
    excluded = _excluded(experiment_id, workers)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in _rows(experiment_id):
        r, t, s, p = row.Response, row.Trial, row.Session, row.Participant
        if (p.platform, p.platform_worker_id) in excluded:
            continue
        writer.writerow([
            s.experiment_id, p.id, p.platform, p.platform_worker_id, s.public_id, s.assignment_id,
            s.hit_id, s.study_id, s.stage, s.screening_passed, t.id, t.trial_index, t.kind, t.track_id,
            row.ref_id, t.family, t.level, row.ref_path, row.test_path, t.a_is_reference, r.answer,
            _label(t, r.answer), t.expected_answer, r.is_correct, r.response_time_ms,
            json.dumps(r.play_counts), t.served_at.isoformat(), r.created_at.isoformat(),
            json.dumps(r.client_info, sort_keys=True), *ab_systems(t.spec, r.answer),
        ])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def triplets(experiment_id: int, kinds: tuple[str, ...] = ("main",), include_screened_out: bool = False,
             workers: str = "kept") -> Iterator[str]:
    """DPAM lines ``ref<TAB>perturbed<TAB>label`` (0 same, 1 different), paths relative to
    the manifest's folder; a 4th column carries the family (readers ignore extras).

    ``workers="kept"`` (default) leaves out the workers the shared screening excludes
    (a failed headphone screen is one of its reasons); ``"all"`` keeps everyone but
    screened-out sessions unless ``include_screened_out``.
    A/B preference experiments have no same/different labels: ValueError."""
    if db.session.scalar(select(Experiment.test_type).where(Experiment.id == experiment_id)) != "same_different":
        raise ValueError("DPAM triplets come from same/different judgments; this experiment is an A/B "
                         "preference test: export judgments.csv or run python -m analysis preference")
    excluded = _excluded(experiment_id, workers)
    for row in _rows(experiment_id, kinds):
        if not include_screened_out and row.Session.screening_passed is False:
            continue
        if (row.Participant.platform, row.Participant.platform_worker_id) in excluded:
            continue
        t = row.Trial
        yield f"{row.ref_path}\t{row.test_path}\t{_label(t, row.Response.answer)}\t{t.family}\n"

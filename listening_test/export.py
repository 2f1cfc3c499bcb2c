"""Exports of an experiment's judgments: every field as CSV, and DPAM triplets."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import aliased

from .db import db
from .models import Participant, Response, Session, Stimulus, Trial

CSV_COLUMNS = [
    "experiment_id", "participant_id", "platform", "platform_worker_id", "session_id",
    "assignment_id", "hit_id", "study_id", "stage", "screening_passed", "trial_id", "trial_index",
    "kind", "track_id", "reference", "family", "level", "reference_path", "test_path",
    "a_is_reference", "answer", "label", "expected_answer", "is_correct", "response_time_ms",
    "play_counts", "served_at", "answered_at", "client_info",
]
PAIR_KINDS = ("main", "practice", "catch_identical", "catch_obvious")


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
    if trial.kind == "screening":
        return ""
    return "1" if answer == "different" else "0"


def judgments_csv(experiment_id: int) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in _rows(experiment_id):
        r, t, s, p = row.Response, row.Trial, row.Session, row.Participant
        writer.writerow([
            s.experiment_id, p.id, p.platform, p.platform_worker_id, s.public_id, s.assignment_id,
            s.hit_id, s.study_id, s.stage, s.screening_passed, t.id, t.trial_index, t.kind, t.track_id,
            row.ref_id, t.family, t.level, row.ref_path, row.test_path, t.a_is_reference, r.answer,
            _label(t, r.answer), t.expected_answer, r.is_correct, r.response_time_ms,
            json.dumps(r.play_counts), t.served_at.isoformat(), r.created_at.isoformat(),
            json.dumps(r.client_info, sort_keys=True),
        ])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def triplets(experiment_id: int, kinds: tuple[str, ...] = ("main",), include_screened_out: bool = False
             ) -> Iterator[str]:
    """DPAM lines ``ref<TAB>perturbed<TAB>label`` (0 same, 1 different), paths relative to
    the manifest's folder; a 4th column carries the family (readers ignore extras)."""
    for row in _rows(experiment_id, kinds):
        if not include_screened_out and row.Session.screening_passed is False:
            continue
        t = row.Trial
        yield f"{row.ref_path}\t{row.test_path}\t{_label(t, row.Response.answer)}\t{t.family}\n"

"""Experiment statistics for the admin dashboard: a few grouped queries, no per-row loops in SQL."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, case, func, select

from .db import db
from .models import Experiment, Participant, Response, ScreeningResult, Session, Track, Trial

CATCH = ("catch_identical", "catch_obvious", "catch_anchor")


def experiment_stats(experiment: Experiment) -> dict[str, Any]:
    eid = experiment.id
    stages = dict(db.session.execute(
        select(Session.stage, func.count()).where(Session.experiment_id == eid).group_by(Session.stage)).all())
    participants = db.session.scalar(select(func.count()).select_from(Participant)
                                     .where(Participant.experiment_id == eid))
    by_kind = {k: (n, c) for k, n, c in db.session.execute(
        select(Trial.kind, func.count(), func.sum(case((Response.is_correct, 1), else_=0)))
        .join(Response, Response.trial_id == Trial.id).join(Session, Session.id == Trial.session_id)
        .where(Session.experiment_id == eid).group_by(Trial.kind)).all()}
    screening = {test: {"sessions": n, "failed": f} for test, n, f in db.session.execute(
        select(ScreeningResult.test, func.count(), func.sum(case((ScreeningResult.passed, 0), else_=1)))
        .join(Session, Session.id == ScreeningResult.session_id)
        .where(Session.experiment_id == eid).group_by(ScreeningResult.test)).all()}
    tracks_total, tracks_finished = db.session.execute(
        select(func.count(), func.coalesce(func.sum(Track.finished.cast(Integer)), 0))
        .where(Track.experiment_id == eid)).one()
    judgments = by_kind.get("main", (0, 0))[0]
    catch_n = sum(by_kind.get(k, (0, 0))[0] for k in CATCH)
    catch_ok = sum(int(by_kind.get(k, (0, 0))[1] or 0) for k in CATCH)
    return {
        "experiment": {"slug": experiment.slug, "name": experiment.name, "status": experiment.status,
                       "procedure": experiment.procedure, "test_type": experiment.test_type},
        "participants": participants,
        "sessions_by_stage": stages,
        "judgments": judgments,
        "responses_by_kind": {k: {"n": n, "correct": int(c or 0)} for k, (n, c) in by_kind.items()},
        "catch_pass_rate": (catch_ok / catch_n) if catch_n else None,
        "catch_pass_rate_by_kind": {k: (int(by_kind[k][1] or 0) / by_kind[k][0]) for k in CATCH if k in by_kind},
        "screening": screening,
        "screening_failures": stages.get("screened_out", 0),
        "tracks": {"total": tracks_total, "finished": int(tracks_finished)},
        "target_judgments": experiment.target_judgments,
        "progress": (judgments / experiment.target_judgments) if experiment.target_judgments else None,
        "workers": worker_detail(eid),
    }


def worker_detail(experiment_id: int) -> list[dict[str, Any]]:
    answered = Response.id.is_not(None)
    is_catch = Trial.kind.in_(CATCH) & answered
    rows = db.session.execute(
        select(Participant.platform, Participant.platform_worker_id, Session.public_id, Session.stage,
               Session.screening_passed, Session.completion_code,
               func.sum(case(((Trial.kind == "main") & answered, 1), else_=0)),
               func.sum(case((is_catch, 1), else_=0)),
               func.sum(case((is_catch & Response.is_correct, 1), else_=0)),
               func.avg(case((Trial.kind == "main", Response.response_time_ms))))
        .join(Session, Session.participant_id == Participant.id)
        .outerjoin(Trial, Trial.session_id == Session.id)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .where(Session.experiment_id == experiment_id)
        .group_by(Participant.platform, Participant.platform_worker_id, Session.id, Session.public_id,
                  Session.stage, Session.screening_passed, Session.completion_code)
        .order_by(Session.id)).all()
    out = []
    for platform, worker, sid, stage, passed, code, n_main, n_catch, ok_catch, mean_rt in rows:
        out.append({
            "platform": platform, "worker_id": worker, "session": sid, "stage": stage,
            "screening_passed": passed, "completed": code is not None,
            "judgments": int(n_main or 0), "catch_trials": int(n_catch or 0),
            "catch_correct": int(ok_catch or 0),
            "catch_pass_rate": (int(ok_catch or 0) / int(n_catch)) if n_catch else None,
            "mean_response_time_ms": float(mean_rt) if mean_rt is not None else None,
        })
    return out

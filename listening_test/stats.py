"""Experiment statistics for the admin dashboard: grouped queries plus the shared screening.

Worker verdicts come from ``listening_test.screening`` (the definition ``analysis``
uses): the dashboard flags exactly the workers the analysis report excludes, with
the same reasons, and the exports keep the same judgments by default.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sqlalchemy import Integer, case, func, select, true

from .db import db
from .models import Experiment, Participant, Response, ScreeningResult, Session, Stimulus, Track, Trial
from .platforms import recruitment
from .screening import ScreeningRules, screen_workers

CATCH = ("catch_identical", "catch_obvious", "catch_anchor")


def worker_key(platform: str, worker_id: str) -> str:
    """The worker key of ``analysis.judgments`` (``platform:worker id``)."""
    return f"{platform}:{worker_id}"


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def screening_verdicts(experiment_id: int, rules: ScreeningRules | None = None) -> dict[str, dict[str, Any]]:
    """worker key -> statistics and verdict (``screening.screen_workers``) for every worker
    with at least one answer; one query over the experiment's responses."""
    rows = db.session.execute(
        select(
            Participant.platform,
            Participant.platform_worker_id,
            Session.public_id,
            Session.screening_passed,
            Trial.kind,
            Response.answer,
            Trial.expected_answer,
            Response.response_time_ms,
            Response.play_counts,
            Response.created_at,
        )
        .join(Trial, Trial.id == Response.trial_id)
        .join(Session, Session.id == Trial.session_id)
        .join(Participant, Participant.id == Session.participant_id)
        .where(Session.experiment_id == experiment_id)
    ).all()
    records = [
        {
            "worker": worker_key(platform, worker),
            "session": sid,
            "screening_passed": passed,
            "kind": kind,
            "answer": answer,
            "expected_answer": expected,
            "response_time_ms": rt,
            "min_plays": min(plays) if plays else None,
            "answered_at": at,
        }
        for platform, worker, sid, passed, kind, answer, expected, rt, plays, at in rows
    ]
    # NaN (a rate with nothing to count) becomes None: JSON has no NaN.
    return {
        w: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in verdict.items()}
        for w, verdict in screen_workers(records, rules).items()
    }


def excluded_workers(experiment_id: int, rules: ScreeningRules | None = None) -> set[str]:
    """Worker keys the shared screening excludes."""
    return {w for w, v in screening_verdicts(experiment_id, rules).items() if v["excluded"]}


def family_estimates(experiment_id: int, excluded: set[str]) -> list[dict[str, Any]]:
    """Live per-family JND estimates from the tracks' current estimates (level units):
    the median over finished tracks of kept workers, with the count of tracks behind it."""
    rows = db.session.execute(
        select(Track.family, Track.estimate, Track.finished, Participant.platform, Participant.platform_worker_id)
        .join(Participant, Participant.id == Track.participant_id)
        .where(Track.experiment_id == experiment_id)
    ).all()
    by_family: dict[str, dict[str, Any]] = {}
    for family, estimate, finished, platform, worker in rows:
        entry = by_family.setdefault(family, {"family": family, "tracks": 0, "finished": 0, "values": []})
        entry["tracks"] += 1
        if finished and estimate is not None and worker_key(platform, worker) not in excluded:
            entry["finished"] += 1
            entry["values"].append(float(estimate))
    out = []
    for family in sorted(by_family):
        e = by_family.pop(family)
        values = e.pop("values")
        e["kept_finished"] = len(values)
        e["median_jnd"] = statistics.median(values) if values else None
        e["q25"], e["q75"] = (
            (statistics.quantiles(values, n=4)[0], statistics.quantiles(values, n=4)[2])
            if len(values) >= 2
            else (None, None)
        )
        out.append(e)
    return out


def experiment_stats(experiment: Experiment) -> dict[str, Any]:
    eid = experiment.id
    stages = dict(
        db.session.execute(
            select(Session.stage, func.count()).where(Session.experiment_id == eid).group_by(Session.stage)
        ).all()
    )
    participants = db.session.scalar(
        select(func.count()).select_from(Participant).where(Participant.experiment_id == eid)
    )
    by_kind = {
        k: (n, c)
        for k, n, c in db.session.execute(
            select(Trial.kind, func.count(), func.sum(case((Response.is_correct == true(), 1), else_=0)))
            .join(Response, Response.trial_id == Trial.id)
            .join(Session, Session.id == Trial.session_id)
            .where(Session.experiment_id == eid)
            .group_by(Trial.kind)
        ).all()
    }
    screening = {
        test: {"sessions": n, "failed": f}
        for test, n, f in db.session.execute(
            select(ScreeningResult.test, func.count(), func.sum(case((ScreeningResult.passed, 0), else_=1)))
            .join(Session, Session.id == ScreeningResult.session_id)
            .where(Session.experiment_id == eid)
            .group_by(ScreeningResult.test)
        ).all()
    }
    tracks_total, tracks_finished = db.session.execute(
        select(func.count(), func.coalesce(func.sum(Track.finished.cast(Integer)), 0)).where(Track.experiment_id == eid)
    ).one()
    judgments = by_kind.get("main", (0, 0))[0]
    catch_n = sum(by_kind.get(k, (0, 0))[0] for k in CATCH)
    catch_ok = sum(int(by_kind.get(k, (0, 0))[1] or 0) for k in CATCH)
    verdicts = screening_verdicts(eid)
    excluded = {w for w, v in verdicts.items() if v["excluded"]}
    workers = worker_detail(eid, verdicts)
    kept_judgments = sum(w["judgments"] for w in workers if not w["excluded"])
    tally = recruitment.counts(eid, db.session)
    durations = [w["duration_s"] for w in workers if w["stage"] == "complete" and w["duration_s"] is not None]
    return {
        "experiment": {
            "slug": experiment.slug,
            "name": experiment.name,
            "status": experiment.status,
            "closed_reason": experiment.closed_reason,
            "procedure": experiment.procedure,
            "test_type": experiment.test_type,
        },
        "participants": participants,
        "sessions_by_stage": stages,
        "judgments": judgments,
        "kept_judgments": kept_judgments,
        "responses_by_kind": {k: {"n": n, "correct": int(c or 0)} for k, (n, c) in by_kind.items()},
        "catch_pass_rate": (catch_ok / catch_n) if catch_n else None,
        "catch_pass_rate_by_kind": {k: (int(by_kind[k][1] or 0) / by_kind[k][0]) for k in CATCH if k in by_kind},
        "screening": screening,
        "screening_failures": stages.get("screened_out", 0),
        "tracks": {"total": tracks_total, "finished": int(tracks_finished)},
        "target_judgments": experiment.target_judgments,
        "target_participants": experiment.target_participants,
        "complete_participants": tally["complete_participants"],
        "in_progress": tally["in_progress"],
        "progress": (judgments / experiment.target_judgments) if experiment.target_judgments else None,
        "participant_progress": (
            tally["complete_participants"] / experiment.target_participants if experiment.target_participants else None
        ),
        "excluded_workers": len(excluded),
        "screened_workers": len(verdicts),
        "median_duration_s": statistics.median(durations) if durations else None,
        "estimate": experiment.estimate,
        "families": family_estimates(eid, excluded),
        "workers": workers,
        "voided_trials": voided_trials(eid),  # issue 14: clips the server could not deliver
        "faulty_stimuli": faulty_stimuli(eid),  # ... and the stimuli taken out of rotation for them
    }


def faulty_stimuli(experiment_id: int) -> dict[str, Any]:
    """Stimuli found faulty while the study ran, out of rotation (store.mark_faulty),
    and the sessions that ended because no healthy track was left (or on repeated faults):
    {"count": n, "stimuli": [{"stimulus_id", "path", "reference", "family", "level", "reason",
    "found_at"}], "sessions_ended_by_faults": [{"session", "worker", "reason"}]}."""
    rows = db.session.execute(
        select(
            Stimulus.stimulus_id,
            Stimulus.path,
            Stimulus.reference,
            Stimulus.family,
            Stimulus.level,
            Stimulus.fault_reason,
            Stimulus.fault_at,
        )
        .where(Stimulus.experiment_id == experiment_id, Stimulus.fault_reason.is_not(None))
        .order_by(Stimulus.fault_at, Stimulus.id)
    ).all()
    ended = db.session.execute(
        select(Session.public_id, Session.schedule_state, Participant.platform, Participant.platform_worker_id)
        .join(Participant, Participant.id == Session.participant_id)
        .where(Session.experiment_id == experiment_id, Session.stage == "complete")
    ).all()
    return {
        "count": len(rows),
        "stimuli": [
            {
                "stimulus_id": sid,
                "path": path,
                "reference": ref,
                "family": fam,
                "level": level,
                "reason": reason,
                "found_at": _iso(at),
            }
            for sid, path, ref, fam, level, reason, at in rows
        ],
        "sessions_ended_by_faults": [
            {"session": pid, "worker": worker_key(platform, wid), "reason": state["ended_by"]}
            for pid, state, platform, wid in ended
            if isinstance(state, dict) and state.get("ended_by")
        ],
    }


def voided_trials(experiment_id: int, limit: int = 50) -> dict[str, Any]:
    """Trials voided because a clip could not be delivered (store.void_trial):
    {"count": n, "latest": [{"trial_id", "worker", "kind", "reason", "voided_at"}, ...]}."""
    count = db.session.scalar(
        select(func.count())
        .select_from(Trial)
        .join(Session, Session.id == Trial.session_id)
        .where(Session.experiment_id == experiment_id, Trial.voided_reason.is_not(None))
    )
    rows = db.session.execute(
        select(
            Trial.id,
            Trial.kind,
            Trial.voided_reason,
            Trial.voided_at,
            Participant.platform,
            Participant.platform_worker_id,
        )
        .join(Session, Session.id == Trial.session_id)
        .join(Participant, Participant.id == Session.participant_id)
        .where(Session.experiment_id == experiment_id, Trial.voided_reason.is_not(None))
        .order_by(Trial.voided_at.desc(), Trial.id.desc())
        .limit(limit)
    ).all()
    return {
        "count": int(count or 0),
        "latest": [
            {
                "trial_id": r.id,
                "worker": worker_key(r.platform, r.platform_worker_id),
                "kind": r.kind,
                "reason": r.voided_reason,
                "voided_at": _iso(r.voided_at),
            }
            for r in rows
        ],
    }


def worker_detail(experiment_id: int, verdicts: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per session, with its worker's screening verdict (``excluded``, ``reasons``)."""
    verdicts = screening_verdicts(experiment_id) if verdicts is None else verdicts
    answered = Response.id.is_not(None)
    is_catch = Trial.kind.in_(CATCH) & answered
    rows = db.session.execute(
        select(
            Participant.platform,
            Participant.platform_worker_id,
            Session.public_id,
            Session.stage,
            Session.screening_passed,
            Session.completion_code,
            Session.created_at,
            Session.completed_at,
            func.sum(case(((Trial.kind == "main") & answered, 1), else_=0)),
            func.sum(case((is_catch, 1), else_=0)),
            func.sum(case((is_catch & Response.is_correct, 1), else_=0)),
            func.avg(case((Trial.kind == "main", Response.response_time_ms))),
            func.max(Response.created_at),
        )
        .join(Session, Session.participant_id == Participant.id)
        .outerjoin(Trial, Trial.session_id == Session.id)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .where(Session.experiment_id == experiment_id)
        .group_by(
            Participant.platform,
            Participant.platform_worker_id,
            Session.id,
            Session.public_id,
            Session.stage,
            Session.screening_passed,
            Session.completion_code,
            Session.created_at,
            Session.completed_at,
        )
        .order_by(Session.id)
    ).all()
    out = []
    for platform, worker, sid, stage, passed, code, started, ended, n_main, n_catch, ok_catch, mean_rt, last in rows:
        verdict = verdicts.get(worker_key(platform, worker))
        end = ended or last
        out.append(
            {
                "platform": platform,
                "worker_id": worker,
                "worker": worker_key(platform, worker),
                "session": sid,
                "stage": stage,
                "screening_passed": passed,
                # Screened-out sessions end with a code too, but they are not complete.
                "completed": stage == "complete",
                "ended": code is not None,
                "judgments": int(n_main or 0),
                "catch_trials": int(n_catch or 0),
                "catch_correct": int(ok_catch or 0),
                "catch_pass_rate": (int(ok_catch or 0) / int(n_catch)) if n_catch else None,
                "mean_response_time_ms": float(mean_rt) if mean_rt is not None else None,
                "started_at": _iso(started),
                "ended_at": _iso(ended),
                "duration_s": _duration(started, end),
                "excluded": bool(verdict and verdict["excluded"]),
                "reasons": verdict["reasons"] if verdict else [],
                "notes": verdict["notes"] if verdict else [],
            }
        )
    return out


def _duration(start, end) -> float | None:
    if start is None or end is None:
        return None
    if (start.tzinfo is None) != (end.tzinfo is None):  # SQLite returns naive datetimes
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    return round((end - start).total_seconds(), 1)


def worker_trials(experiment_id: int, worker: str) -> dict[str, Any]:
    """The drill-down of one worker (``platform:worker id``): verdict, sessions and every answer.

    Raises LookupError when the experiment has no such worker.
    """
    from .platforms.identity import normalize_worker_id

    platform, _, worker_id = worker.partition(":")
    worker_id = normalize_worker_id(platform, worker_id)  # any case variant names the same worker
    worker = worker_key(platform, worker_id)
    sessions = [s for s in worker_detail(experiment_id) if s["worker"] == worker]
    if not sessions:
        raise LookupError(f"no worker {worker!r} in this experiment")
    rows = db.session.execute(
        select(
            Session.public_id,
            Trial.trial_index,
            Trial.kind,
            Trial.family,
            Trial.level,
            Response.answer,
            Trial.expected_answer,
            Response.is_correct,
            Response.response_time_ms,
            Response.play_counts,
            Trial.served_at,
            Response.created_at,
        )
        .join(Trial, Trial.session_id == Session.id)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .join(Participant, Participant.id == Session.participant_id)
        .where(
            Session.experiment_id == experiment_id,
            Participant.platform == platform,
            Participant.platform_worker_id == worker_id,
        )
        .order_by(Session.id, Trial.trial_index)
    ).all()
    verdict = screening_verdicts(experiment_id).get(worker)
    return {
        "worker": worker,
        "verdict": verdict,
        "sessions": sessions,
        "trials": [
            {
                "session": sid,
                "index": i,
                "kind": kind,
                "family": fam,
                "level": level,
                "answer": answer,
                "expected": expected,
                "correct": ok,
                "response_time_ms": rt,
                "play_counts": plays,
                "served_at": _iso(served),
                "answered_at": _iso(at),
            }
            for sid, i, kind, fam, level, answer, expected, ok, rt, plays, served, at in rows
        ],
    }

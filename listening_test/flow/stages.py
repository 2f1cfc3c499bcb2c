"""The participant's stage machine, on plain data.

landing -> consent -> volume -> screening -> instructions -> practice -> main -> complete
(screening may end in ``screened_out``; stages with nothing to do are skipped).

Invariant: while a session is in a trial stage (screening, practice, main) it has
exactly one unanswered trial, its latest (``trial_index == n_trials - 1``). The next
trial is built in the step that records an answer (or enters the stage), so serving a
trial is a read and a reload always gets the same trial back.

Each step changes the ``FlowSession`` (and its ``TrackRow``s) in place and returns an
``Outcome``: what the store must write besides (the new trial, the headphone check's
results) and whether the session ended. The practice and main stages need the
session's tracks: the store reads them (or makes them, ``flow.trials.plan_tracks``)
before a step that can reach these stages (``needs_tracks``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from .. import estimates
from ..errors import ApiError
from . import tally
from .session import FlowSession, OpenTrial, Study
from .trials import NewTrial, TrackRow, main_trial, screening_trial

TRIAL_STAGES = ("screening", "practice", "main")
TERMINAL_STAGES = ("complete", "screened_out")
ORDER = ("consent", "volume", "screening", "instructions", "practice", "main", "complete")
STAGES = (*ORDER, "screened_out")  # every stage a session can be in (``sessions.stage``)
STEPS = ("consent", "volume", "instructions")  # the stages a participant leaves by a step of their own
# Voids that took no new stimulus out of rotation (a safety net: every real fault does):
# after this many the session ends as complete, with its reason in schedule_state["ended_by"].
MAX_VOIDED_TRIALS = 5
ENDED_BY_CHARS = 2000


@dataclass
class Outcome:
    """What one step asks the store to write besides the session and its tracks.

    ``new_trial``: the trial the session now shows (at most one a step);
    ``screening_results``: the headphone check's rows (``tally.Verdict.results``), when it
    ended in this step; ``ended``: ``"complete"`` or ``"screened_out"`` when the session
    ended in this step (the store records the time and checks the study's targets).
    """

    new_trial: NewTrial | None = None
    screening_results: list[dict[str, Any]] = field(default_factory=list)
    ended: str | None = None


def completion_code() -> str:
    """A random code of 10 upper-case hex digits, easy to copy."""
    return secrets.token_hex(5).upper()


def answered_count(session: FlowSession) -> int:
    """Trials answered so far: every served trial but the open one (the module's invariant)."""
    return session.n_trials - (1 if session.stage in TRIAL_STAGES else 0)


def step_target(stage: str, step: str) -> str | None:
    """Where a session at ``stage`` goes when the participant is done with ``step`` (one of
    ``STEPS``): the next stage, or None when the session is past ``step`` already (a repeat,
    a no-op).

    Raises:
        ApiError: 409 ``wrong_stage`` (with ``stage``) when the session has not reached ``step``.
        ValueError: ``step`` is not one of ``STEPS``.
    """
    if step not in STEPS:
        raise ValueError(f"{step!r} is not a participant's step; one of {STEPS}")
    if stage == step:
        return ORDER[ORDER.index(step) + 1]
    if stage in TERMINAL_STAGES or ORDER.index(stage) > ORDER.index(step):
        return None  # already past it: idempotent
    raise ApiError(409, "wrong_stage", f"the session is at {stage!r}, not {step!r}", stage=stage)


def needs_tracks(target: str, study: Study) -> bool:
    """Whether entering ``target`` can reach the practice or main stage, which build trials
    on the session's tracks (stages are skipped per ``study.flow``)."""
    stage = target
    if stage == "screening" and not study.flow.screening.enabled:
        stage = "instructions"
    return stage in ("practice", "main")


def enter(session: FlowSession, stage: str, study: Study) -> Outcome:
    """Move ``session`` to ``stage`` and skip forward past stages with nothing to do:
    screening without tests, practice without trials, a main part whose tracks are all
    finished. A trial stage gets its first trial; a terminal stage a completion code.

    Raises:
        ValueError: the session's tracks are not loaded (None) where practice or main needs them.
    """
    out = Outcome()
    flow = study.flow
    while True:
        session.stage = stage
        session.schedule_state = {**session.schedule_state, "served_in_stage": 0}
        if stage == "screening" and not flow.screening.enabled:
            stage = "instructions"
            continue
        if stage == "practice":
            tracks = _tracks(session)
            if flow.practice_trials == 0:
                stage = "main"
                continue
            _serve(session, study.design.practice_trial(session, tracks, study.ladders, flow, 0), out)
        elif stage == "screening":
            _serve(session, screening_trial(session, flow, 0), out)
        elif stage == "main":
            trial = main_trial(session, _tracks(session), flow, study.design, study.ladders)
            if trial is None:
                stage = "complete"
                continue
            _serve(session, trial, out)
        elif stage in TERMINAL_STAGES:
            session.completion_code = session.completion_code or completion_code()
            out.ended = stage
        return out


def after_answer(session: FlowSession, trial: OpenTrial, answer: str, correct: bool | None, study: Study) -> Outcome:
    """The step after ``trial`` (the session's open trial) was answered with ``answer``
    (``correct``: ``answers.is_correct``): count it (headphone check) or feed it to its
    track (main), then serve the stage's next trial or move on.

    After a main trial, ``schedule_state["expected_left"]`` is the main trials still
    expected, the new one included (``estimates.trials_left`` on ``study.estimate``: the
    progress bar), unless the session ended.

    Raises:
        ValueError: the session's tracks are not loaded where practice or main needs them.
    """
    flow = study.flow
    served = int(session.schedule_state.get("served_in_stage", 0))
    if trial.kind == "screening":
        session.schedule_state = tally.count(session.schedule_state, trial.spec["test"], correct)
        verdict = tally.verdict(flow.screening, session.schedule_state, served)
        if verdict is None:
            return _serve(session, screening_trial(session, flow, served), Outcome())
        session.screening_passed = verdict.passed
        out = enter(session, "instructions" if verdict.passed else "screened_out", study)
        out.screening_results = verdict.results
        return out
    tracks = _tracks(session)
    if trial.kind == "practice":
        if served < flow.practice_trials:
            return _serve(session, study.design.practice_trial(session, tracks, study.ladders, flow, served), Outcome())
        return enter(session, "main", study)
    if trial.kind == "main" and trial.track_id is not None:
        track = next(t for t in tracks if t.id == trial.track_id)
        study.design.record_main_answer(track, trial, answer)
    nxt = main_trial(session, tracks, flow, study.design, study.ladders)
    if nxt is None:
        return enter(session, "complete", study)
    out = _serve(session, nxt, Outcome())
    # Expected main trials still to come, the open one included (the progress bar).
    session.schedule_state = {**session.schedule_state, "expected_left": estimates.trials_left(study.estimate, tracks)}
    return out


def after_void(
    session: FlowSession, trial: OpenTrial, study: Study, *, took_new_stimulus: bool, reason: str
) -> Outcome:
    """The step after ``trial`` was voided because a clip could not be delivered (``reason``).

    A void that took no new stimulus out of rotation (``took_new_stimulus`` False) counts
    toward ``MAX_VOIDED_TRIALS``, after which the session completes
    (``schedule_state["ended_by"]`` says why). Otherwise a headphone check counts as
    correct (the benefit of the doubt), a practice trial as served, and a main trial
    finishes its track (its ladder has a hole the procedure would keep asking for); the
    session goes on with its healthy tracks and completes when none is left.

    Raises:
        ValueError: the session's tracks are not loaded where practice or main needs them.
    """
    state = session.schedule_state
    fruitless = int(state.get("fruitless_voids", 0)) + (not took_new_stimulus)
    n_voided = int(state.get("voided_trials", 0)) + 1
    session.schedule_state = {**state, "voided_trials": n_voided, "fruitless_voids": fruitless}
    if fruitless >= MAX_VOIDED_TRIALS:
        _ended_by(
            session, f"{fruitless} voided trials whose faults took no new stimulus out of rotation; last: {reason}"
        )
        return enter(session, "complete", study)
    if trial.kind == "screening":
        return after_answer(session, trial, trial.expected_answer or "", True, study)
    if trial.kind == "practice":
        return after_answer(session, trial, "", None, study)
    tracks = _tracks(session)
    if trial.kind == "main" and trial.track_id is not None:
        for track in tracks:
            if track.id == trial.track_id:
                track.finished = True
    ladders = study.ladders
    nxt = main_trial(session, tracks, study.flow, study.design, ladders)
    if nxt is None:
        if any(not ladders.healthy(t.reference, t.family) for t in tracks):
            _ended_by(session, "no healthy track left: the stimuli of the others were found faulty; last: " + reason)
        return enter(session, "complete", study)
    return _serve(session, nxt, Outcome())


def _ended_by(session: FlowSession, why: str) -> None:
    session.schedule_state = {**session.schedule_state, "ended_by": why[:ENDED_BY_CHARS]}


def _serve(session: FlowSession, trial: NewTrial, out: Outcome) -> Outcome:
    """``trial`` becomes the session's open trial (the store writes it)."""
    out.new_trial = trial
    session.schedule_state = {
        **session.schedule_state,
        "served_in_stage": int(session.schedule_state.get("served_in_stage", 0)) + 1,
    }
    return out


def _tracks(session: FlowSession) -> list[TrackRow]:
    if session.tracks is None:
        raise ValueError("the session's tracks are not loaded; the store reads them before this step")
    return session.tracks

"""The session flow's pure core (``listening_test.flow``) on plain data: no database, no Flask.

The stage machine, the answer checks, the headphone check's tally and the choice of the
next trial, run on ``FlowSession``/``StudyData`` objects built here; whole sessions are
played to their end the way the store drives them (enter, answer, write what changed).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from listening_test import estimates, headphone
from listening_test.errors import ApiError
from listening_test.flow import answers, payload, stages, tally
from listening_test.flow.ab import AB_PREFERENCE
from listening_test.flow.session import FlowSession, OpenTrial, StudyData
from listening_test.flow.trials import SAME_DIFFERENT, Ladders, NewTrial, TrackRow, main_trial
from listening_test.flow_config import FlowConfig
from listening_test.procedures import paired

LEVELS = [2.0, 4.0, 6.0, 8.0, 10.0]
PROCEDURE = "staircase"
PROCEDURE_CONFIG = {"max_trials": 4, "max_reversals": None}
NO_SCREENING = {"tests": []}


def sd_ladders(faulty: dict[int, str] | None = None, families: tuple[str, ...] = ("noise", "mp3")) -> Ladders:
    """Two references x ``families``, five rungs each; stimuli.id: references 1, 2; rungs 10+."""
    references = {"r1": 1, "r2": 2}
    rungs, sid = {}, 10
    for ref in references:
        for fam in families:
            rungs[(ref, fam)] = [(level, sid + i) for i, level in enumerate(LEVELS)]
            sid += len(LEVELS)
    return Ladders(references, rungs, dict(faulty or {}))


def sd_study(flow: dict | None = None, *, estimate: bool = False, ladders: Ladders | None = None) -> StudyData:
    config = FlowConfig.from_dict(
        {
            "references_per_participant": 1,
            "catch_rate": 0.2,
            "practice_trials": 2,
            "screening": NO_SCREENING,
            **(flow or {}),
        }
    )
    ladders = ladders or sd_ladders()
    est = None
    if estimate:
        levels = {key: [level for level, _ in rungs] for key, rungs in ladders.rungs.items()}
        est = estimates.study_estimate(PROCEDURE, PROCEDURE_CONFIG, config, levels, "same_different", 1.0)
    return StudyData(config, SAME_DIFFERENT, ladders, est)


def start_tracks(session: FlowSession, study: StudyData, usage: dict | None = None) -> list[TrackRow]:
    """What the store does before practice: plan the tracks and give them ids."""
    plans = study.design.plan_tracks(
        session.seed,
        study.ladders,
        usage or {},
        study.flow,
        PROCEDURE if study.design is SAME_DIFFERENT else paired.PROCEDURE_NAME,
        PROCEDURE_CONFIG if study.design is SAME_DIFFERENT else {},
    )
    session.tracks = [
        TrackRow(100 + i, p.reference, p.family, p.procedure_state, 0, p.finished, None) for i, p in enumerate(plans)
    ]
    return session.tracks


class Driver:
    """Plays the store's part on plain data: keeps the open trial and what was written."""

    def __init__(self, study: StudyData, seed: int = 7):
        self.study = study
        self.session = FlowSession(id=1, seed=seed, schedule_state={"volume_token": "v"})
        self.trials: list[NewTrial] = []
        self.open: OpenTrial | None = None
        self.results: list[dict] = []
        self.ended: str | None = None

    def apply(self, out: stages.Outcome) -> None:
        if out.new_trial is not None:
            t = out.new_trial
            self.trials.append(t)
            assert t.trial_index == len(self.trials) - 1 == self.session.n_trials - 1
            self.open = OpenTrial(
                len(self.trials),
                t.trial_index,
                t.kind,
                t.nonce,
                False,
                t.spec,
                [f"tok{t.trial_index}-{slot}" for slot in range(len(t.clips))],
                expected_answer=t.expected_answer,
                track_id=t.track_id,
                level=t.level,
            )
        else:
            self.open = None
        self.results += out.screening_results
        self.ended = self.ended or out.ended

    def step(self, step: str) -> None:
        target = stages.step_target(self.session.stage, step)
        if target is None:
            return
        if stages.needs_tracks(target, self.study) and not self.session.tracks:
            start_tracks(self.session, self.study)
        self.apply(stages.enter(self.session, target, self.study))

    def answer(self, answer: str) -> None:
        trial = self.open
        assert trial is not None and self.session.stage in stages.TRIAL_STAGES
        body = {"answer": answer, "play_counts": [1] * trial.n_clips, "response_time_ms": 900}
        answers.check_answer(trial, body, self.study.design.choices)
        trial.answered = True
        self.apply(stages.after_answer(self.session, trial, answer, answers.is_correct(trial, answer), self.study))

    def to_main(self) -> None:
        for step in ("consent", "volume", "instructions"):
            self.step(step)
        while self.session.stage == "practice":
            self.answer(self.open.expected_answer)


def test_the_core_imports_neither_flask_nor_the_database():
    code = (
        "import sys, listening_test.flow, listening_test.flow.ab, listening_test.flow.payload\n"
        "bad = {'flask', 'flask_sqlalchemy', 'flask_migrate', 'sqlalchemy', 'psycopg', 'sqlite3',"
        " 'werkzeug', 'click'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # ...and the check sees one: the store does import the database.
    code = code.replace("listening_test.flow, ", "listening_test.store, ")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "sqlalchemy" in out.stdout and "flask" in out.stdout


# --- the stage machine -------------------------------------------------------------------


def test_steps_go_forward_once_and_refuse_a_stage_not_reached():
    assert stages.step_target("consent", "consent") == "volume"
    assert stages.step_target("volume", "volume") == "screening"
    assert stages.step_target("instructions", "instructions") == "practice"
    assert stages.step_target("main", "consent") is None  # a repeat: a no-op
    assert stages.step_target("screened_out", "instructions") is None
    with pytest.raises(ApiError) as refused:
        stages.step_target("consent", "instructions")
    assert (refused.value.status, refused.value.code, refused.value.extra) == (409, "wrong_stage", {"stage": "consent"})
    with pytest.raises(ValueError, match="step"):
        stages.step_target("practice", "practice")


def test_stages_with_nothing_to_do_are_skipped():
    d = Driver(sd_study({"practice_trials": 0}))
    d.step("consent")
    d.step("volume")
    assert d.session.stage == "instructions" and d.open is None  # no screening configured
    assert not stages.needs_tracks("screening", d.study) and stages.needs_tracks("practice", d.study)
    d.step("instructions")
    assert d.session.stage == "main" and d.open.kind in ("main", "catch_identical", "catch_obvious")
    assert d.session.schedule_state["served_in_stage"] == 1
    assert len(d.session.tracks) == 2  # one reference x both families


def test_a_main_part_with_every_track_finished_completes_at_once():
    study = sd_study({"practice_trials": 0})
    session = FlowSession(id=1, seed=3)
    for track in start_tracks(session, study):
        track.finished = True
    out = stages.enter(session, "practice", study)
    assert session.stage == "complete" and out.ended == "complete" and out.new_trial is None
    assert len(session.completion_code) == 10 and session.completion_code == session.completion_code.upper()
    code = session.completion_code
    stages.enter(session, "complete", study)
    assert session.completion_code == code  # kept once given


def test_practice_and_main_need_the_tracks_read():
    with pytest.raises(ValueError, match="tracks"):
        stages.enter(FlowSession(id=1, seed=1), "practice", sd_study())


def test_a_whole_same_different_session_on_plain_data():
    d = Driver(sd_study(estimate=True), seed=11)
    d.to_main()
    kinds, figures = [], []
    while d.session.stage == "main":
        kinds.append(d.open.kind)
        answer = d.open.expected_answer or ("different" if d.open.level >= 6 else "same")
        d.answer(answer)
        if d.session.stage == "main":
            figures.append(d.session.schedule_state["expected_left"])
    assert d.session.stage == "complete" and d.ended == "complete" and d.open is None
    assert all(t.finished and t.n_trials == PROCEDURE_CONFIG["max_trials"] for t in d.session.tracks)
    assert kinds.count("main") == 2 * PROCEDURE_CONFIG["max_trials"]
    n_catch = sum(k.startswith("catch_") for k in kinds)
    assert abs(n_catch - 0.2 * len(kinds)) <= 1  # within one of catch_rate x trials
    assert all(f is not None and f >= 1 for f in figures)
    assert figures[-1] <= 2  # near the end, the figure is nearly exact
    assert stages.answered_count(d.session) == d.session.n_trials == len(d.trials)
    # The same seed gives the same session (every random choice is seeded by the session).
    again = Driver(sd_study(estimate=True), seed=11)
    again.to_main()
    assert [t.values["level"] for t in again.trials] == [t.values["level"] for t in d.trials[: len(again.trials)]]


def test_practice_gives_both_answers_then_main_follows():
    d = Driver(sd_study({"practice_trials": 4}))
    for step in ("consent", "volume", "instructions"):
        d.step(step)
    expected = []
    while d.session.stage == "practice":
        assert d.open.kind == "practice" and d.open.track_id is None
        expected.append(d.open.expected_answer)
        assert answers.feedback(d.open, "same") == {"correct": expected[-1] == "same", "expected": expected[-1]}
        d.answer("same")  # wrong half the time: practice goes on regardless
    assert sorted(expected) == ["different", "different", "same", "same"]
    assert d.session.stage == "main" and d.session.schedule_state["served_in_stage"] == 1


def test_the_main_part_ends_at_its_cap():
    d = Driver(sd_study({"max_main_trials": 3, "catch_rate": 0.0, "practice_trials": 0}))
    d.to_main()
    served = 0
    while d.session.stage == "main":
        served += 1
        d.answer("same")
    assert served == 3 and d.session.stage == "complete"
    assert not all(t.finished for t in d.session.tracks)


# --- the headphone check ------------------------------------------------------------------


def screening_driver(rule: str = "all") -> Driver:
    d = Driver(
        sd_study(
            {"screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 3, "min_correct": 2, "rule": rule}}
        )
    )
    d.step("consent")
    d.step("volume")
    assert d.session.stage == "screening" and d.open.kind == "screening" and d.open.n_clips == headphone.N_INTERVALS
    return d


def test_a_passed_headphone_check_records_each_test_and_goes_on():
    d = screening_driver()
    tests = []
    while d.session.stage == "screening":
        tests.append(d.open.spec["test"])
        d.answer(d.open.expected_answer)
    assert tests == ["huggins"] * 3 + ["antiphase"] * 3
    assert d.session.stage == "instructions" and d.session.screening_passed is True and d.open is None
    assert d.results == [
        {"test": "huggins", "n_trials": 3, "n_correct": 3, "passed": True},
        {"test": "antiphase", "n_trials": 3, "n_correct": 3, "passed": True},
    ]
    assert d.ended is None


def test_a_headphone_check_stops_once_a_pass_is_out_of_reach():
    d = screening_driver("all")
    for _ in range(2):  # two wrong answers of three: huggins can no longer reach 2
        wrong = next(c for c in answers.SCREENING_CHOICES if c != d.open.expected_answer)
        d.answer(wrong)
    assert d.session.stage == "screened_out" and d.ended == "screened_out" and d.session.screening_passed is False
    assert d.session.completion_code and d.session.n_trials == 2
    assert d.results[0] == {"test": "huggins", "n_trials": 2, "n_correct": 0, "passed": False}
    assert d.results[1] == {"test": "antiphase", "n_trials": 0, "n_correct": 0, "passed": False}


def test_the_tally_counts_without_changing_its_input():
    before = {"served_in_stage": 1}
    after = tally.count(before, "huggins", True)
    after = tally.count(after, "huggins", None)
    assert before == {"served_in_stage": 1}
    assert after["screening_correct"] == {"huggins": 1} and after["screening_answered"] == {"huggins": 2}
    config = headphone.ScreeningConfig(tests=("huggins", "antiphase"), trials_per_test=2, min_correct=1, rule="any")
    assert tally.verdict(config, after, served=2) is None  # antiphase still to come
    lost = tally.count(tally.count({}, "huggins", False), "huggins", False)
    assert tally.verdict(config, lost, served=2) is None  # "any": antiphase may still pass
    done = tally.verdict(config, tally.count(lost, "antiphase", True), served=4)
    assert done.passed and [r["passed"] for r in done.results] == [False, True]


# --- answers --------------------------------------------------------------------------------


def open_trial(kind: str = "main", expected: str | None = None, clips: int = 2) -> OpenTrial:
    return OpenTrial(5, 3, kind, "n" * 22, False, {}, ["t"] * clips, expected_answer=expected)


def test_answers_must_name_this_sessions_trial_with_its_nonce():
    with pytest.raises(ApiError) as missing:
        answers.open_for(None, "x")
    assert (missing.value.status, missing.value.code) == (404, "trial_not_found")
    with pytest.raises(ApiError) as forged:
        answers.open_for(open_trial(), "m" * 22)
    assert (forged.value.status, forged.value.code) == (403, "bad_nonce")
    trial = open_trial()
    assert answers.open_for(trial, "n" * 22) is trial


def test_an_answer_must_fit_its_trial():
    trial = open_trial()
    good = {"answer": "same", "play_counts": [1, 2], "response_time_ms": 0}
    assert answers.answer_errors(trial, good, SAME_DIFFERENT.choices) == {}
    bad = {"answer": "A", "play_counts": [1, True], "response_time_ms": answers.MAX_RESPONSE_TIME_MS + 1}
    assert set(answers.answer_errors(trial, bad, SAME_DIFFERENT.choices)) == {
        "answer",
        "play_counts",
        "response_time_ms",
    }
    assert "play_counts" in answers.answer_errors(trial, {**good, "play_counts": [1]}, SAME_DIFFERENT.choices)
    assert "play_counts" in answers.answer_errors(trial, {**good, "play_counts": [1, -1]}, SAME_DIFFERENT.choices)
    assert (
        answers.answer_errors(
            open_trial(clips=3), {**good, "answer": "B", "play_counts": [0, 1, 1]}, AB_PREFERENCE.choices
        )
        == {}
    )
    screening = open_trial("screening", "2", clips=3)
    assert "answer" in answers.answer_errors(screening, {**good, "play_counts": [1, 1, 1]}, SAME_DIFFERENT.choices)
    assert (
        answers.answer_errors(screening, {**good, "answer": "2", "play_counts": [1, 1, 1]}, SAME_DIFFERENT.choices)
        == {}
    )
    with pytest.raises(ApiError) as refused:
        answers.check_answer(trial, bad, SAME_DIFFERENT.choices)
    assert refused.value.status == 422 and set(refused.value.extra["fields"]) == {
        "answer",
        "play_counts",
        "response_time_ms",
    }


def test_scoring_feedback_and_resubmits():
    practice, catch = open_trial("practice", "different"), open_trial("catch_identical", "same")
    assert answers.is_correct(practice, "different") is True and answers.is_correct(catch, "different") is False
    assert answers.is_correct(open_trial("main"), "same") is None
    assert answers.feedback(catch, "same") is None  # no feedback that would teach the catch trials
    assert answers.resubmit(practice, "same", "same", "practice") == {"correct": False, "expected": "different"}
    assert answers.resubmit(catch, "same", "same", "main") is None
    with pytest.raises(ApiError) as stale:
        answers.resubmit(catch, "same", "different", "main")
    assert (stale.value.status, stale.value.code, stale.value.extra) == (409, "already_answered", {"stage": "main"})
    with pytest.raises(ApiError):
        answers.resubmit(catch, None, "same", "main")  # voided: nothing to repeat


# --- the next trial and faults -----------------------------------------------------------------


def test_tracks_go_to_the_least_used_references_and_skip_faulty_ladders():
    study = sd_study({"families_per_participant": 1})
    session = FlowSession(id=1, seed=5)
    tracks = start_tracks(session, study, usage={("r1", "noise"): 3, ("r1", "mp3"): 3, ("r2", "noise"): 1})
    # References: r1 has 6 tracks, r2 1; families: noise 4, mp3 3.
    assert [(t.reference, t.family) for t in tracks] == [("r2", "mp3")]
    faulty = sd_study(ladders=sd_ladders({10: "gone"}))  # a rung of ("r1", "noise")
    plans = SAME_DIFFERENT.plan_tracks(
        5,
        faulty.ladders,
        {},
        FlowConfig.from_dict({"references_per_participant": 2, "screening": NO_SCREENING}),
        PROCEDURE,
        PROCEDURE_CONFIG,
    )
    assert ("r1", "noise") not in {(p.reference, p.family) for p in plans} and len(plans) == 3


def test_a_stimulus_found_faulty_closes_its_tracks_and_catches_avoid_it():
    ladders = sd_ladders()
    session = FlowSession(id=1, seed=2, stage="main", schedule_state={"served_in_stage": 0})
    study = sd_study({"references_per_participant": 2, "families_per_participant": 1, "catch_rate": 0.5})
    tracks = start_tracks(session, study)
    hit = tracks[0]
    bad = ladders.with_faults({ladders.rungs[(hit.reference, hit.family)][0][1]: "missing"})
    served = []
    for _ in range(8):
        trial = main_trial(session, tracks, study.flow, SAME_DIFFERENT, bad)
        assert trial is not None
        served.append(trial)
        session.schedule_state = {
            **session.schedule_state,
            "served_in_stage": session.schedule_state["served_in_stage"] + 1,
        }
    assert hit.finished and session.schedule_state["tracks_closed_by_faults"] == [hit.id]
    assert all(
        (t.values["reference_stimulus_id"], t.family) != (bad.references[hit.reference], hit.family) for t in served
    )


def test_repeated_fruitless_voids_end_the_session():
    d = Driver(
        sd_study(
            {"references_per_participant": 2, "practice_trials": 0, "catch_rate": 0.0},
            ladders=sd_ladders(families=("noise", "mp3", "reverb")),
        )
    )
    d.to_main()
    for n in range(1, stages.MAX_VOIDED_TRIALS + 1):
        trial = d.open
        trial.answered = True
        d.apply(stages.after_void(d.session, trial, d.study, took_new_stimulus=False, reason=f"clip 0: gone {n}"))
        assert d.session.schedule_state["voided_trials"] == n
        if n < stages.MAX_VOIDED_TRIALS:
            assert d.session.stage == "main"
    assert d.session.stage == "complete" and d.ended == "complete"
    assert d.session.schedule_state["ended_by"].startswith(f"{stages.MAX_VOIDED_TRIALS} voided trials")
    assert "gone 5" in d.session.schedule_state["ended_by"]


def test_a_voided_main_trial_finishes_its_track():
    d = Driver(sd_study({"practice_trials": 0, "catch_rate": 0.0}))
    d.to_main()
    trial = d.open
    trial.answered = True
    d.apply(stages.after_void(d.session, trial, d.study, took_new_stimulus=True, reason="clip 1: gone"))
    voided = next(t for t in d.session.tracks if t.id == trial.track_id)
    assert voided.finished and d.session.schedule_state["fruitless_voids"] == 0
    assert d.session.stage == "main" and d.open.track_id != voided.id


# --- A/B and the payload -----------------------------------------------------------------------


def ab_study() -> StudyData:
    references = {"utt1": 1, "utt2": 2}
    rungs = {
        (item, system): [(0.0, 10 * i + j)]
        for i, item in enumerate(references)
        for j, system in enumerate(("noisy", "demucs", "ours"))
    }
    flow = FlowConfig.from_dict(
        {
            "references_per_participant": 2,
            "catch_rate": 0.25,
            "practice_trials": 1,
            "anchor_system": "noisy",
            "screening": NO_SCREENING,
        }
    )
    return StudyData(flow, AB_PREFERENCE, Ladders(references, rungs))


def test_a_whole_ab_session_on_plain_data():
    d = Driver(ab_study(), seed=4)
    d.to_main()
    kinds = []
    while d.session.stage == "main":
        assert d.open.n_clips == 3
        if d.open.kind == "main":  # the anchor is never compared with the others
            assert "noisy" not in d.open.spec["systems"] and d.open.expected_answer is None
        else:  # the clean clip against the anchor
            assert d.open.kind == "catch_anchor" and set(d.open.spec["systems"]) == {"reference", "noisy"}
        kinds.append(d.open.kind)
        d.answer(d.open.expected_answer or "A")
    assert d.session.stage == "complete"
    assert kinds.count("main") == 2  # two items x one pair (demucs|ours), one repeat
    assert all(t.finished for t in d.session.tracks)


def test_the_state_payload_tells_nothing_that_gives_the_answer_away():
    d = Driver(sd_study())
    d.to_main()
    trial = d.open
    out = payload.state_payload(d.session, trial, d.study.flow, d.study.design, None, lambda token: f"/audio/{token}")
    assert out["stage"] == "main" and out["completion"] is None and "volume" not in out
    assert out["progress"] == {"trials_answered": d.session.n_trials - 1, "in_stage": 1, "expected_left": None}
    shown = out["trial"]
    assert set(shown) == {"id", "nonce", "index", "phase", "prompt", "choices", "clips"}
    assert shown["phase"] == "main" and shown["choices"] == ["same", "different"]
    assert [c["label"] for c in shown["clips"]] == ["A", "B"] and shown["clips"][0]["url"].startswith("/audio/tok")
    screening = OpenTrial(1, 0, "screening", "n", False, {"test": "antiphase"}, ["a", "b", "c"])
    assert payload.trial_payload(screening, str)["choices"] == ["1", "2", "3"]
    volume = FlowSession(id=1, seed=1, stage="volume", schedule_state={"volume_token": "vt"})
    assert payload.state_payload(volume, None, d.study.flow, d.study.design, None, str)["volume"] == {
        "clips": [{"label": "calibration", "url": "vt"}]
    }


def test_session_randomness_is_per_trial():
    """Every trial's choices come from its own stream: serving is reproducible and order-free."""
    from listening_test.flow.trials import session_rng

    session = FlowSession(id=1, seed=9, n_trials=4)
    a = session_rng(session).random(3)
    assert np.array_equal(a, session_rng(FlowSession(id=2, seed=9), 4).random(3))
    assert not np.array_equal(a, session_rng(session, 5).random(3))

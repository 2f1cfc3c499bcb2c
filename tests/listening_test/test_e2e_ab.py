"""Real-browser end-to-end test of an A/B preference study ("which of A and B sounds
closer to the clean reference?"): Debian's Chromium (headless, Playwright's sync API)
goes through preview, consent, volume, headphone screening (each test's example first,
by keyboard), instructions, practice with feedback, the main-part screen, main trials
answered by keyboard (with a reload in the middle of one)
and the completion code; then the database is checked: every answer is "A" or "B"
and every response has one play count per clip (Reference, A, B).

Screenshots go to ``artifacts/e2e/ab-*.png`` under the repository root. Skipped when
/usr/bin/chromium is missing, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from listening_test.db import db
from listening_test.manifest_import import create_experiment
from listening_test.models import Response, Trial
from tests.listening_test.lt_helpers import (
    E2EPage,
    assert_every_trial_answered_once,
    live_server,
    open_trial,
    row_counts_of_trials,
    template_copy_app,
    wait_answered,
)
from tests.manifests import ManifestWriter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SR = 16000
ITEMS = ("utt_a", "utt_b")
SYSTEMS = ("sysx", "sysy")  # the two compared "enhancers"
ANCHOR = "noisy"  # the unprocessed input: catch and practice trials only
AB_FLOW = {
    "anchor_system": ANCHOR,
    "references_per_participant": 2,
    "catch_rate": 0.25,
    "practice_trials": 2,
    "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 1, "min_correct": 1},
}
AB_PROCEDURE = {"repeats": 2}  # 2 items x 1 pair x 2 orders = 4 main trials (+ catch trials)
MTURK = {
    "workerId": "ABWORKER",
    "assignmentId": "ABASSIGN",
    "hitId": "ABHIT",
    "turkSubmitTo": "https://workersandbox.mturk.com",
}
CLIP_IDS = ("#play-ref", "#play-a", "#play-b")
STATE_IDS = ("#clip-ref-state", "#clip-a-state", "#clip-b-state")


def write_ab_stimulus_set(folder: Path) -> Path:
    """Two clean 0.2 s items, each with an output of sysx, sysy and the noisy anchor."""
    rng = np.random.default_rng(7)
    t = np.arange(SR // 5) / SR
    out = ManifestWriter(folder, SR)
    for k, item in enumerate(ITEMS):
        clean = 0.2 * np.sin(2 * np.pi * (300 + 200 * k) * t) * np.hanning(len(t))
        out.add(item, item, "reference", 0.0, clean, seed=7)
        outputs = {
            "sysx": clean + 0.01 * rng.standard_normal(len(t)),
            "sysy": 0.7 * clean + 0.03 * rng.standard_normal(len(t)),
            ANCHOR: clean + 0.1 * rng.standard_normal(len(t)),
        }
        for system, audio in outputs.items():
            out.add(
                f"{item}_{system}",
                item,
                system,
                0.0,
                audio,
                {"system": system, "source": f"{system}/{item}.wav", "gain_db": 0.0},
                seed=7,
            )
    return out.write()


@pytest.fixture
def ab_server(tmp_path, template_db):
    """(app, base_url): an A/B experiment "ab" behind a live server on a free port."""
    manifest = write_ab_stimulus_set(tmp_path / "ab_stimuli")
    app = template_copy_app(template_db, tmp_path / "ab.sqlite")
    with app.app_context():
        experiment = create_experiment(
            db.session,
            manifest,
            procedure="paired",
            name="ab",
            test_type="ab_preference",
            procedure_config=AB_PROCEDURE,
            config=AB_FLOW,
            target_judgments=10,
        )
        db.session.commit()
        assert experiment.slug == "ab"
    with contextlib.ExitStack() as stack:
        yield app, stack.enter_context(live_server(app))


def test_ab_session_in_chromium(ab_server, browser):
    from playwright.sync_api import expect

    app, base = ab_server
    e2e = E2EPage(browser, "ab-")
    context, page, errors, shot, heading = e2e.context, e2e.page, e2e.errors, e2e.shot, e2e.heading
    trial_screen = page.locator("#screen-trial")
    choice_a = page.locator("#trial-choices [data-answer='A']")
    choice_b = page.locator("#trial-choices [data-answer='B']")

    def play(key_or_click: str, slot: int) -> None:
        """Play clip ``slot`` (0 reference, 1 A, 2 B) by a key or a click, and wait until it ends."""
        if key_or_click == "click":
            page.locator(CLIP_IDS[slot]).click()
        else:
            page.keyboard.press(key_or_click)
        expect(page.locator(STATE_IDS[slot])).to_have_text("played ✓")

    # 0. The experiment's public info, and a page that names no system, stimulus or file.
    info = page.request.get(f"{base}/api/experiments/ab").json()
    assert info["test_type"] == "ab_preference"
    html = page.request.get(f"{base}/e/ab").text()
    assert 'data-test-type="ab_preference"' in html
    for word in (*SYSTEMS, ANCHOR, *ITEMS, "audio/", "/audio/"):
        assert word not in html, word

    # 1. MTurk preview: the A/B description, nothing created.
    page.goto(
        f"{base}/e/ab?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H0&turkSubmitTo=https://workersandbox.mturk.com"
    )
    expect(heading("preview")).to_be_visible()
    preview = page.locator("#screen-preview")
    expect(preview).to_contain_text("closer to the reference")
    expect(preview).not_to_contain_text("the same")
    expect(preview).to_contain_text("Accept the HIT")
    shot("preview")
    assert row_counts_of_trials(app) == (0, 0, 0)

    # 2. Consent: about comparing processed speech with a clean recording.
    query = "&".join(f"{k}={v}" for k, v in MTURK.items())
    with page.expect_response(lambda r: r.url.endswith("/api/experiments/ab/sessions")) as landing:
        page.goto(f"{base}/e/ab?{query}")
    assert landing.value.json()["experiment"]["test_type"] == "ab_preference"
    expect(heading("consent")).to_be_visible()
    consent = page.locator("#screen-consent")
    expect(consent).to_contain_text("compare processed speech clips with a clean recording")
    expect(consent).not_to_contain_text("same or different")
    expect(page.locator("#consent-submit")).to_be_disabled()
    shot("consent")
    page.get_by_label("I have read the above").check()
    page.locator("#consent-submit").click()

    # 3. Volume.
    expect(heading("volume")).to_be_visible()
    page.locator("#volume-play").click()
    expect(page.locator("#volume-continue")).to_be_enabled()
    page.locator("#volume-continue").click()

    # 4. Headphone screening as in the same/different study, driven by keyboard: each test's
    # example first (P is refused, saying why, until it has been heard), then the three
    # intervals once, then the target; focus lands on the choice group, never on "Sound 1".
    answers = 0
    example, play_set = page.locator("#example-play"), page.locator("#screening-play")
    for i in range(2):
        expect(heading("screening")).to_contain_text(f"Headphone check {i + 1} of 2")
        trial = open_trial(app)
        assert trial.kind == "screening"
        choices = page.locator("#screening-choices .choice")
        expect(choices.first).to_be_disabled()
        expect(play_set).to_be_disabled()
        page.keyboard.press("p")  # refused, and the status line says why
        expect(page.locator("#status")).to_have_text("First hear the example (the button above).")
        expect(page.locator("#status")).to_have_class("status error")
        expect(choices.first).to_be_disabled()
        if i == 0:  # the screen opened on its heading; the example is the next stop for Tab
            expect(heading("screening")).to_be_focused()
            page.keyboard.press("Tab")
            expect(example).to_be_focused()
        else:
            expect(example).to_be_focused()  # the next test opens on its example
        page.keyboard.press("Enter")
        expect(play_set).to_be_enabled()
        expect(play_set).to_be_focused()
        page.keyboard.press("p")
        expect(choices.first).to_be_enabled()
        expect(page.locator("#screening-choices")).to_be_focused()
        expect(play_set).to_be_disabled()  # each set plays once
        if i == 0:
            shot("screening")
        page.keyboard.press(trial.expected_answer)
        answers += 1
        wait_answered(app, trial.id)

    # 5. Instructions: Reference, A, B; closer to the reference; playback rules; keys.
    expect(heading("instructions")).to_be_visible()
    instructions = page.locator("#screen-instructions")
    for text in (
        "Reference",
        "closer to the reference",
        "play all three clips",
        "Keyboard shortcuts",
        "play the reference",
        "A is closer to the reference",
        "B is closer to the reference",
    ):
        expect(instructions).to_contain_text(text)
    expect(instructions).not_to_contain_text("Different")
    shot("instructions")
    page.locator("#instructions-continue").click()

    # 6. Practice (the clean copy against the anchor), with feedback.
    expect(page.locator("#play-ref")).to_have_attribute("aria-keyshortcuts", "R 0")
    expect(choice_a).to_have_attribute("aria-keyshortcuts", "ArrowLeft J")
    expect(choice_b).to_have_attribute("aria-keyshortcuts", "ArrowRight K")
    expect(page.locator("#trial-choices .choice")).to_have_count(2)
    expect(page.locator("#screen-trial .clip")).to_have_count(3)
    for i in range(2):
        expect(page.locator("#trial-phase")).to_have_text("Practice trial")
        expect(page.locator("#trial-number")).to_have_text(f"{i + 1} of 2")
        trial = open_trial(app)
        assert trial.kind == "practice" and trial.expected_answer in ("A", "B")
        if i == 1:
            expect(page.locator("#play-ref")).to_be_focused()  # a new trial: focus on its first clip
        expect(choice_a).to_be_disabled()
        play("click", 0)
        play("click", 1)
        expect(choice_a).to_be_disabled()  # B not played to the end yet
        expect(choice_b).to_be_disabled()
        page.keyboard.press("j")  # ignored while the answer buttons are disabled
        play("click", 2)
        expect(choice_a).to_be_enabled()
        expect(choice_b).to_be_enabled()
        if i == 0:
            shot("practice")
        expected = trial.expected_answer
        if i == 0:  # a wrong answer, by a click: the corrective feedback
            page.locator(f"#trial-choices [data-answer='{'B' if expected == 'A' else 'A'}']").click()
        else:  # the right one, by its key
            page.keyboard.press("ArrowLeft" if expected == "A" else "ArrowRight")
        answers += 1
        feedback = page.locator("#feedback")
        expect(feedback).to_be_visible()
        expect(feedback).to_contain_text(
            ("Not quite" if i == 0 else "Correct") + f": clip {expected} was closer to the reference."
        )
        expect(page.locator("#feedback-continue")).to_contain_text("Next trial")
        if i == 0:
            shot("practice-feedback")
        page.keyboard.press("Enter")

    # 7. The screen that marks the start of the main part (reached and left by keyboard), then
    #    the main trials, by keyboard only; a reload in the middle of the second one.
    expect(heading("main-intro")).to_have_text("The practice is over: the study starts now")
    expect(heading("main-intro")).to_be_focused()
    expect(page.locator("#screen-main-intro")).to_contain_text("Take your time on each trial")
    shot("main-intro")
    page.keyboard.press("Tab")
    expect(page.locator("#main-intro-start")).to_be_focused()
    page.keyboard.press("Enter")
    n_main = 0
    answer_keys = ("ArrowLeft", "k", "j", "ArrowRight")  # A, B, A, B on the non-catch trials
    n_plain = 0
    expected_counts: dict[int, list[int]] = {}
    for _ in range(40):
        if page.locator("#screen-complete").is_visible():
            break
        trial = open_trial(app)
        if trial is None:  # the last answer is in; the completion screen is on its way
            expect(heading("complete")).to_be_visible()
            break
        expect(page.locator("#trial-phase")).to_have_text("Trial")
        expect(page.locator("#trial-number")).to_have_text(str(n_main + 1))
        assert trial.kind in ("main", "catch_anchor")
        expect(trial_screen).not_to_contain_text("Same")
        counts = [1, 1, 1]
        play("r", 0)
        if n_main == 0:
            play("0", 0)  # the reference twice: play_counts [2, 1, 1]
            counts[0] = 2
        if n_main == 1:
            e2e.reload_on_trial(app, trial.id, n_main + 1)
            expect(page.locator("#clip-ref-state")).to_have_text("not played yet")
            expect(choice_a).to_be_disabled()
            play("0", 0)
        play("1" if n_main % 2 else "a", 1)
        expect(choice_b).to_be_disabled()  # B not played yet
        play("2" if n_main % 2 else "b", 2)
        if n_main == 2:
            play("b", 2)  # B twice: play_counts [1, 1, 2]
            counts[2] = 2
        expect(choice_a).to_be_enabled()
        if n_main == 0:
            shot("main-trial")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            expect(page.locator("#trial-hint")).to_be_hidden()  # no keyboard hints on a narrow screen
            shot("main-trial-phone", full_page=False)
            for selector in (*CLIP_IDS, "#trial-choices [data-answer='A']", "#trial-choices [data-answer='B']"):
                box = page.locator(selector).bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector  # nothing off-screen
            page.set_viewport_size({"width": 1280, "height": 860})
        if trial.expected_answer:  # a catch trial: the clean side is the right answer
            page.keyboard.press("ArrowLeft" if trial.expected_answer == "A" else "ArrowRight")
        else:
            page.keyboard.press(answer_keys[n_plain % len(answer_keys)])
            n_plain += 1
        expected_counts[trial.id] = counts
        n_main += 1
        answers += 1
        wait_answered(app, trial.id)
    assert n_main >= 4

    # 8. Completion: the code.
    e2e.completion_code(app)
    expect(page.locator("#mturk-form")).to_be_visible()
    shot("complete")

    # 9. The database: one response per trial, A/B answers, three play counts in clip order.
    assert_every_trial_answered_once(app, answers)
    with app.app_context():
        rows = db.session.execute(select(Response, Trial).join(Trial, Response.trial_id == Trial.id)).all()
        kinds = [t.kind for _, t in rows]
        assert kinds.count("screening") == 2 and kinds.count("practice") == 2
        assert kinds.count("main") >= 4
        for r, t in rows:
            if t.kind == "screening":
                assert r.answer in ("1", "2", "3") and r.play_counts == [1, 1, 1]  # played once
                continue
            assert r.answer in ("A", "B"), (t.kind, r.answer)
            assert len(r.play_counts) == 3 and min(r.play_counts) >= 1, r.play_counts
            assert r.response_time_ms >= 0
            systems = t.spec["systems"]
            if t.kind == "main":
                assert sorted(systems) == sorted(SYSTEMS) and t.expected_answer is None
            else:  # practice and catch: the clean copy against the anchor, scored
                assert sorted(systems) == sorted(("reference", ANCHOR))
                assert r.is_correct == (r.answer == t.expected_answer)
            if t.id in expected_counts:
                assert r.play_counts == expected_counts[t.id], (t.id, r.play_counts)
        main_answers = {r.answer for r, t in rows if t.kind == "main"}
        assert main_answers == {"A", "B"}  # both keys were used on main trials
    assert errors == [], errors
    context.close()
    e2e.print_shots()

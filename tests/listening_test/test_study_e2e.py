"""Browser tests (Debian's Chromium via Playwright) of running a real study (issue 17):
the Prolific completion redirect, a study closing itself at its participant target,
the main-part screen, refused answers that say why, the headphone check's example,
early stop and once-only promise across a reload, and the dashboard's flagged workers
with the kept-judgment export.

Screenshots go to ``artifacts/e2e/`` (``study-*.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from listening_test.db import db
from listening_test.models import Experiment, Response, Session
from tests.listening_test.lt_helpers import ADMIN_TOKEN, ARTIFACTS, E2EPage, open_trial, participant_at, wait_answered

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROCEDURE = {"max_trials": 2, "max_reversals": None, "n_down": 1}  # 1-up/1-down: a reversal fits in 2 trials
NO_SCREENING = {
    "references_per_participant": 1,
    "families_per_participant": 1,
    "catch_rate": 0.0,
    "practice_trials": 1,
    "screening": {"tests": []},
}


@pytest.fixture
def serve(serve_demo):
    """serve(config, **experiment_fields) -> (app, base_url) on a free port."""
    return lambda config, **fields: serve_demo(config, PROCEDURE, set_fields=fields)


def _page(browser, **context_args):
    e2e = E2EPage(browser, accept_dialogs=True, **context_args)
    return e2e.context, e2e.page, e2e.errors


def _shot(page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"study-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def test_prolific_redirect_main_part_screen_and_closing_at_the_target(serve, browser):
    from playwright.sync_api import expect

    app, base = serve(
        NO_SCREENING,
        prolific_completion_code="C0MPL3TE",
        prolific_screened_out_code="SCR33N0T",
        target_participants=1,
        status="active",
    )
    context, page, errors = _page(browser)
    redirected: list[str] = []
    page.route(
        "https://app.prolific.com/**",
        lambda route, request: (redirected.append(request.url), route.fulfill(status=200, body="prolific")),
    )
    page.goto(f"{base}/e/demo?PROLIFIC_PID=PP1&STUDY_ID=ST1&SESSION_ID=SE1")
    expect(page.locator("#screen-consent h1")).to_be_visible()
    expect(page.locator("#consent-duration")).to_contain_text("minutes")
    expect(page.locator("#consent-submit")).to_be_disabled()
    page.locator("#consent-submit").click(force=True)  # greyed out: it says why
    expect(page.locator("#status")).to_have_text("Tick the box above to agree before you continue.")
    page.get_by_label("I have read the above").check()
    page.locator("#consent-submit").click()
    page.locator("#volume-play").click()
    expect(page.locator("#volume-continue")).to_be_enabled()  # after the sample's first full play
    page.locator("#volume-continue").click()
    page.locator("#instructions-continue").click()

    # Practice: a refused answer says why; after the feedback the clips can be replayed.
    expect(page.locator("#trial-phase")).to_have_text("Practice pair")
    page.keyboard.press("s")
    expect(page.locator("#status")).to_contain_text("Play A and B to the end before you answer")
    page.locator("#trial-choices [data-answer='same']").click(force=True)  # a greyed-out button
    expect(page.locator("#status")).to_contain_text("to the end before you answer")
    _shot(page, "refused-answer")
    page.locator("#play-a").click()
    expect(page.locator("#clip-a-state")).to_have_text("played ✓")
    page.locator("#play-b").click()
    expect(page.locator("#trial-choices [data-answer='same']")).to_be_enabled()
    page.keyboard.press("s")
    expect(page.locator("#feedback")).to_be_visible()
    page.keyboard.press("a")  # replay after the feedback
    expect(page.locator("#status")).to_contain_text("Clip A replayed.")
    _shot(page, "practice-replay")
    page.locator("#feedback-continue").click()

    # The main part starts with a screen of its own.
    expect(page.locator("#screen-main-intro h1")).to_have_text("The practice is over: the study starts now")
    expect(page.locator("#main-intro-length")).to_contain_text("about 2 pairs")
    _shot(page, "main-intro")
    page.locator("#main-intro-start").click()
    for number in range(1, 11):
        if page.locator("#screen-complete").is_visible():
            break
        trial = open_trial(app)
        if trial is None:
            break
        expect(page.locator("#trial-phase")).to_have_text("Pair")
        # The answer is stored before its reply reaches the page: a key pressed while the
        # previous pair is still on screen (saving) is ignored, so wait for this pair's number.
        expect(page.locator("#trial-number")).to_have_text(str(number))
        page.keyboard.press("a")
        expect(page.locator("#clip-a-state")).to_have_text("played ✓")
        page.keyboard.press("b")
        expect(page.locator("#clip-b-state")).to_have_text("played ✓")
        page.keyboard.press("d")
        wait_answered(app, trial.id)

    # Completion: the study's Prolific code and the redirect with it.
    expect(page.locator("#screen-complete h1")).to_have_text("Thank you!")
    expect(page.locator("#completion-code")).to_have_text("C0MPL3TE")
    expect(page.locator("#complete-message")).to_contain_text("taken back to Prolific")
    expect(page.locator("#prolific-link")).to_have_attribute(
        "href", "https://app.prolific.com/submissions/complete?cc=C0MPL3TE"
    )
    _shot(page, "prolific-complete")
    page.wait_for_url("https://app.prolific.com/**")  # the automatic redirect (5 s), within TIMEOUT_MS
    assert redirected == ["https://app.prolific.com/submissions/complete?cc=C0MPL3TE"]
    assert errors == [], errors
    context.close()

    # One complete participant was the target: the study closed itself, newcomers are told.
    with app.app_context():
        e = db.session.scalar(select(Experiment))
        assert (e.status, e.closed_reason) == ("closed", "target_participants")
    context, page, errors = _page(browser)
    page.goto(f"{base}/e/demo?PROLIFIC_PID=PP2&STUDY_ID=ST1&SESSION_ID=SE2")
    expect(page.locator("#screen-error h1")).to_have_text("This study is full")
    expect(page.locator("#error-message")).to_contain_text("already has all the participants it needs")
    expect(page.locator("#error-retry")).to_be_hidden()
    _shot(page, "study-full")
    with app.app_context():
        assert db.session.scalar(select(func.count(Session.id))) == 1
    # The dashboard says so, with the codes and the progress against the target.
    page.goto(f"{base}/admin/e/demo")
    page.get_by_label("Token or password").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#meta")).to_contain_text("closed: full (reached its participants target)")
    expect(page.locator("#participant-label")).to_contain_text("1 of 1")
    expect(page.locator("#codes")).to_contain_text("C0MPL3TE")
    expect(page.locator("#codes")).to_contain_text("SCR33N0T")
    _shot(page, "dashboard-full")
    assert errors == [], errors
    context.close()


def test_headphone_check_example_reload_and_early_stop(serve, browser):
    from playwright.sync_api import expect

    config = {**NO_SCREENING, "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 3, "min_correct": 3}}
    app, base = serve(config, status="active")
    context, page, errors = _page(browser)
    page.goto(f"{base}/e/demo?workerId=HW1&assignmentId=HA1&hitId=HH1&turkSubmitTo=https://workersandbox.mturk.com")
    page.get_by_label("I have read the above").check()
    page.locator("#consent-submit").click()
    page.locator("#volume-play").click()
    page.locator("#volume-continue").click()
    expect(page.locator("#screen-screening h1")).to_contain_text("Headphone check 1 of 6")
    # An example first: the set cannot be played before it.
    expect(page.locator("#screening-play")).to_be_disabled()
    expect(page.locator("#example-text")).to_contain_text("the first sound has the faint tone")
    _shot(page, "headphone-example")
    page.locator("#example-play").click()
    expect(page.locator("#screening-play")).to_be_enabled()
    page.locator("#screening-play").click()
    choices = page.locator("#screening-choices .choice")
    expect(choices.first).to_be_enabled()
    # No answer is preselected and focus is on the group, so Enter answers nothing.
    assert page.evaluate("document.activeElement.id") == "screening-choices"
    page.keyboard.press("Enter")
    trial = open_trial(app)
    assert not trial.answered
    # A reload: the set was played once, and the server keeps the promise.
    page.reload()
    expect(page.locator("#status")).to_contain_text("already played once")
    expect(page.locator("#screening-play")).to_be_disabled()
    expect(choices.first).to_be_enabled()
    _shot(page, "headphone-reloaded")
    # A wrong answer makes a pass impossible (3 of 3 needed): the check stops at once.
    wrong = next(a for a in ("1", "2", "3") if a != trial.expected_answer)
    page.locator(f"#screening-choices [data-answer='{wrong}']").click()
    expect(page.locator("#screen-complete h1")).to_have_text("Thank you for your time")
    expect(page.locator("#complete-message")).to_contain_text("marked as screened out")
    _shot(page, "headphone-screened-out")
    with app.app_context():
        assert db.session.scalar(select(func.count(Response.id))) == 1  # 1 of 6 checks, not 6
        assert db.session.scalar(select(Session.stage)) == "screened_out"
    assert errors == [], errors
    context.close()


def test_dashboard_flags_excluded_workers_and_exports_kept_judgments(serve, browser, tmp_path):
    from playwright.sync_api import expect

    config = {
        "references_per_participant": 2,
        "families_per_participant": 2,
        "catch_rate": 0.5,
        "practice_trials": 0,
        "screening": {"tests": []},
    }
    app, base = serve(config, status="active", procedure_config={"max_trials": 5, "max_reversals": None})
    rng = np.random.default_rng(5)
    participant_at(app, "complete", params={"PROLIFIC_PID": "careful", "STUDY_ID": "S", "SESSION_ID": "1"})
    clicker = participant_at(app, "main", params={"PROLIFIC_PID": "clicker", "STUDY_ID": "S", "SESSION_ID": "2"})
    while clicker.state["stage"] == "main":
        trial = clicker.state["trial"]
        expected = clicker.expected(trial["id"])
        # Wrong on every catch trial, random on the rest.
        answer = (
            {"same": "different", "different": "same"}[expected]
            if expected
            else ("same" if rng.random() < 0.5 else "different")
        )
        clicker.answer(answer)
    context, page, errors = _page(browser, accept_downloads=True)
    page.goto(f"{base}/admin/e/demo")
    page.get_by_label("Token or password").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    clicker_row = page.locator("#workers tbody tr", has_text="clicker")
    expect(clicker_row).to_contain_text("excluded")
    expect(clicker_row).to_contain_text("catch accuracy 0.00 < 0.75")
    expect(page.locator("#workers tbody tr", has_text="careful")).to_contain_text("kept")
    expect(page.locator("#cards")).to_contain_text("Excluded workers")
    expect(page.locator("#families tbody")).to_contain_text("noise")
    _shot(page, "dashboard-flagged")
    with page.expect_download() as download:
        page.get_by_role("button", name="DPAM triplets (kept workers)").click()
    assert download.value.suggested_filename == "demo-triplets-kept.txt"
    kept = Path(download.value.path()).read_text()
    with page.expect_download() as download:
        page.get_by_role("button", name="DPAM triplets (all workers)").click()
    assert download.value.suggested_filename == "demo-triplets-all.txt"
    everyone = Path(download.value.path()).read_text()
    assert 0 < kept.count("\n") < everyone.count("\n")
    # Every kept line is the careful worker's: the clicker's main answers are gone.
    stats = (
        app.test_client()
        .get("/admin/api/experiments/demo/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        .get_json()
    )
    by_worker = {w["worker_id"]: w for w in stats["workers"]}
    assert kept.count("\n") == by_worker["careful"]["judgments"]
    assert everyone.count("\n") == by_worker["careful"]["judgments"] + by_worker["clicker"]["judgments"]
    # The drill-down of the flagged worker.
    clicker_row.get_by_role("button").click()
    expect(page.locator("#drilldown h2")).to_have_text("Worker prolific:clicker")
    expect(page.locator("#drilldown-verdict")).to_contain_text("Excluded: catch accuracy")
    expect(page.locator("#worker-trials tbody tr").first).to_be_visible()
    _shot(page, "dashboard-drilldown")
    assert errors == [], errors
    context.close()

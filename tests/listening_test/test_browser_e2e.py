"""Real-browser end-to-end test: Debian's Chromium (headless, via Playwright's sync
API) completes a whole MTurk session against a live server: preview, consent,
volume, headphone screening, instructions, practice with feedback, main trials
(with a reload in the middle), the completion code and MTurk's externalSubmit.

Screenshots of every screen go to ``artifacts/e2e/`` under the repository root
(printed at the end). Skipped when /usr/bin/chromium is missing, except with
CI=true, where that is a failure.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from sqlalchemy import func, select

from listening_test.db import db
from listening_test.models import Response, Session
from tests.listening_test.lt_helpers import (
    ADMIN_TOKEN,
    ARTIFACTS,
    TIMEOUT_MS,
    E2EPage,
    assert_every_trial_answered_once,
    open_trial,
    row_counts_of_trials,
    wait_answered,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

E2E_FLOW = {
    "references_per_participant": 1,
    "families_per_participant": 1,
    "catch_rate": 0.25,
    "practice_trials": 2,
    "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 1, "min_correct": 1},
}
E2E_PROCEDURE = {"max_trials": 3, "max_reversals": None}
MTURK = {
    "workerId": "E2EWORKER",
    "assignmentId": "E2EASSIGN",
    "hitId": "E2EHIT",
    "turkSubmitTo": "https://workersandbox.mturk.com",
}


@pytest.fixture
def serve(serve_demo):
    """serve(config, **create_kwargs) -> (app, base_url): a live server on a free port."""
    return functools.partial(serve_demo, procedure_config=E2E_PROCEDURE)


def test_whole_session_in_chromium(serve, browser, manifest_path):
    from playwright.sync_api import expect

    app, base = serve(E2E_FLOW, target_judgments=10)
    e2e = E2EPage(browser, accept_dialogs=True)
    context, page, errors, shot, heading = e2e.context, e2e.page, e2e.errors, e2e.shot, e2e.heading

    # 1. MTurk preview: a description, nothing created.
    page.goto(
        f"{base}/e/demo?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H0&turkSubmitTo=https://workersandbox.mturk.com"
    )
    expect(heading("preview")).to_be_visible()
    expect(page.locator("#screen-preview")).to_contain_text("Accept the HIT")
    shot("preview")
    assert row_counts_of_trials(app) == (0, 0, 0)

    # 2. Consent (the button stays disabled until the box is ticked).
    query = "&".join(f"{k}={v}" for k, v in MTURK.items())
    page.goto(f"{base}/e/demo?{query}")
    expect(heading("consent")).to_be_visible()
    expect(page.locator("#consent-submit")).to_be_disabled()
    shot("consent")
    page.get_by_label("I have read the above").check()
    page.locator("#consent-submit").click()

    # 3. Volume.
    expect(heading("volume")).to_be_visible()
    expect(page.locator("#volume-continue")).to_be_disabled()
    page.locator("#volume-play").click()
    expect(page.locator("#volume-continue")).to_be_enabled()
    shot("volume")
    page.locator("#volume-continue").click()

    # 4. Headphone screening: play the three intervals, answer the generated target.
    answers = 0
    for i in range(2):
        expect(heading("screening")).to_contain_text(f"Headphone check {i + 1} of 2")
        trial = open_trial(app)
        assert trial.kind == "screening"
        choices = page.locator("#screening-choices .choice")
        expect(choices.first).to_be_disabled()  # full playback is required first
        # Each test starts with its example; Play stays disabled until it has been heard.
        expect(page.locator("#screening-play")).to_be_disabled()
        page.locator("#example-play").click()
        expect(page.locator("#screening-play")).to_be_enabled()
        if i == 0:
            page.locator("#screening-play").click()
        else:
            page.keyboard.press("p")
        expect(choices.first).to_be_enabled(timeout=TIMEOUT_MS)
        # Focus on the choice group, not "Sound 1" (Enter must not answer); the set played once.
        expect(page.locator("#screening-choices")).to_be_focused()
        expect(page.locator("#screening-play")).to_be_disabled()
        if i == 0:
            shot("screening")
            page.locator(f"#screening-choices [data-answer='{trial.expected_answer}']").click()
        else:
            page.keyboard.press(trial.expected_answer)
        answers += 1
        wait_answered(app, trial.id)

    # 5. Instructions.
    expect(heading("instructions")).to_be_visible()
    expect(page.locator("#screen-instructions")).to_contain_text("Keyboard shortcuts")
    shot("instructions")
    page.locator("#instructions-continue").click()

    # 6. Practice, with feedback.
    for i in range(2):
        expect(page.locator("#trial-phase")).to_have_text("Practice pair")
        expect(page.locator("#trial-number")).to_have_text(f"{i + 1} of 2")
        trial = open_trial(app)
        assert trial.kind == "practice"
        same = page.locator("#trial-choices [data-answer='same']")
        expect(same).to_be_disabled()
        page.locator("#play-a").click()
        expect(page.locator("#clip-a-state")).to_have_text("played ✓")
        expect(same).to_be_disabled()  # B not played yet
        page.locator("#play-b").click()
        expect(same).to_be_enabled()
        if i == 0:
            shot("practice")
        # Answer wrongly once to see the corrective feedback.
        wrong = "same" if trial.expected_answer == "different" else "different"
        page.locator(f"#trial-choices [data-answer='{wrong if i == 0 else trial.expected_answer}']").click()
        answers += 1
        expect(page.locator("#feedback")).to_be_visible()
        expect(page.locator("#feedback")).to_contain_text("Not quite" if i == 0 else "Correct")
        if i == 0:
            shot("practice-feedback")
        page.keyboard.press("Enter")

    # 7. The screen that marks the start of the main part, then the main trials, by keyboard
    #    only; a reload in the middle of the second one.
    expect(heading("main-intro")).to_have_text("The practice is over: the study starts now")
    shot("main-intro")
    page.locator("#main-intro-start").click()
    n_main = 0
    for _ in range(40):
        if page.locator("#screen-complete").is_visible():
            break
        expect(page.locator("#trial-phase")).to_have_text("Pair")
        trial = open_trial(app)
        if trial is None:  # the last answer is in; the completion screen is on its way
            expect(heading("complete")).to_be_visible()
            break
        assert trial.kind in ("main", "catch_identical", "catch_obvious")
        expect(page.locator("#trial-number")).to_have_text(str(n_main + 1))
        page.keyboard.press("a")
        expect(page.locator("#clip-a-state")).to_have_text("played ✓")
        if n_main == 1:
            e2e.reload_on_trial(app, trial.id, n_main + 1)
            expect(page.locator("#clip-a-state")).to_have_text("not played yet")
            page.keyboard.press("1")
            expect(page.locator("#clip-a-state")).to_have_text("played ✓")
        page.keyboard.press("b")
        expect(page.locator("#trial-choices [data-answer='same']")).to_be_enabled()
        if n_main == 0:
            shot("main-trial")
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            shot("main-trial-phone", full_page=False)
            page.set_viewport_size({"width": 1280, "height": 860})
        page.keyboard.press("s" if (trial.expected_answer or "same") == "same" else "d")
        n_main += 1
        answers += 1
        wait_answered(app, trial.id)
    assert n_main >= 2

    # 8. Completion: the code, and the externalSubmit form post to MTurk (intercepted).
    code = e2e.completion_code(app)
    shot("complete")
    posted: dict = {}

    def fake_mturk(route, request):
        posted.update(url=request.url, method=request.method, body=request.post_data or "")
        route.fulfill(status=200, content_type="text/html", body="<p>submitted</p>")

    page.route("https://workersandbox.mturk.com/**", fake_mturk)
    page.locator("#mturk-submit").click()
    page.wait_for_url("https://workersandbox.mturk.com/**")
    assert posted["url"] == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert posted["method"] == "POST"
    fields = {k: v[0] for k, v in parse_qs(posted["body"]).items()}
    assert fields == {"assignmentId": MTURK["assignmentId"], "completion_code": code, "status": "complete"}

    # 9. The database: every answer stored exactly once, every served trial answered.
    assert_every_trial_answered_once(app, answers)
    with app.app_context():
        rows = db.session.scalars(select(Response)).all()
        assert all(sum(r.play_counts) >= 1 for r in rows)
        assert all(r.response_time_ms >= 0 for r in rows)
    assert errors == [], errors
    context.close()

    # 10. The admin dashboard (log in with the token), its CSV export, and creating an
    #     experiment from a manifest in the UI.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = e2e.page = context.new_page()  # shot() screenshots this page now
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/admin/e/demo")
    expect(page.locator("#login-form")).to_be_visible()
    page.get_by_label("Token or password").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#workers tbody")).to_contain_text(MTURK["workerId"])
    expect(page.locator("#cards")).to_contain_text("Judgments (main)")
    expect(page.locator("#target-label")).to_contain_text("of 10")
    shot("admin-dashboard")
    with page.expect_download() as download:
        page.get_by_role("button", name="Judgments CSV (all workers)").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.count("\n") == answers + 1  # a header, then one row per response
    page.goto(f"{base}/admin/")
    expect(page.locator("#experiments tbody")).to_contain_text("demo")
    page.get_by_label("Stimulus set").select_option(str(manifest_path.resolve()))
    page.get_by_label("Name", exact=True).fill("UI study")
    page.locator("details summary").click()
    page.get_by_label("Flow config (JSON)").fill('{"catch_rate": 0.05}')
    page.get_by_role("button", name="Create experiment").click()
    # The new experiment's length is simulated with its procedure: give it time.
    expect(page.locator("#experiments tbody")).to_contain_text("ui-study", timeout=TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("(draft): about")
    shot("admin-experiments")
    assert errors == [], errors
    context.close()
    e2e.print_shots()


def test_screened_out_prolific_without_full_playback(serve, browser):
    """require_full_playback off: answers are possible at once. Failing the headphone
    check ends the session with the screened-out code and the Prolific redirect."""
    from playwright.sync_api import expect

    flow = {
        **E2E_FLOW,
        "require_full_playback": False,
        "screening": {"tests": ["antiphase"], "trials_per_test": 1, "min_correct": 1},
    }
    app, base = serve(flow, prolific_completion_code="OKCODE1")
    with app.app_context():
        from listening_test.models import Experiment

        db.session.scalar(select(Experiment)).prolific_screened_out_code = "SCREENED1"
        db.session.commit()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    redirected: list[str] = []
    page.route(
        "https://app.prolific.com/**",
        lambda route, request: (redirected.append(request.url), route.fulfill(status=200, body="prolific")),
    )
    page.goto(f"{base}/e/demo?PROLIFIC_PID=P1&STUDY_ID=S1&SESSION_ID=X1")
    page.get_by_label("I have read the above").check()
    page.locator("#consent-submit").click()
    page.locator("#volume-play").click()
    page.locator("#volume-continue").click()
    expect(page.locator("#screen-screening h1")).to_be_visible()
    choice = page.locator("#screening-choices .choice").first
    expect(choice).to_be_enabled()  # no playback needed with require_full_playback off
    expect(page.locator(".kbd-only").first).to_be_hidden()  # no keyboard hints on a phone
    target = open_trial(app).expected_answer
    wrong = next(a for a in ("1", "2", "3") if a != target)
    page.locator(f"#screening-choices [data-answer='{wrong}']").tap()
    expect(page.locator("#screen-complete h1")).to_have_text("Thank you for your time")
    expect(page.locator("#completion-code")).to_have_text("SCREENED1")
    expect(page.locator("#prolific-link")).to_have_attribute(
        "href", "https://app.prolific.com/submissions/complete?cc=SCREENED1"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "20-screened-out-phone.png"))
    page.wait_for_url("https://app.prolific.com/**")  # the automatic redirect (5 s), within TIMEOUT_MS
    assert redirected == ["https://app.prolific.com/submissions/complete?cc=SCREENED1"]
    with app.app_context():
        session = db.session.scalar(select(Session))
        assert session.stage == "screened_out" and session.screening_passed is False
        assert db.session.scalar(select(func.count(Response.id))) == 1
        assert db.session.scalar(select(Response.play_counts)) == [0, 0, 0]
    context.close()
    print(f"\nscreenshot: {ARTIFACTS / '20-screened-out-phone.png'}")

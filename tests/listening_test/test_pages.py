"""The HTML pages: participant page, MTurk preview, admin pages; nothing leaks into the HTML."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from listening_test.db import db
from listening_test.estimates import ensure_estimate
from listening_test.models import Stimulus
from tests.listening_test.lt_helpers import Participant, row_counts

MTURK = "workerId=W1&assignmentId=A1&hitId=H1&turkSubmitTo=https://www.mturk.com"


def _no_leaks(app, html: str) -> None:
    """No stimulus path, stimulus id, family name or level value appears in a page."""
    with app.app_context():
        stimuli = db.session.scalars(select(Stimulus)).all()
    for s in stimuli:
        assert s.path not in html and f"{s.stimulus_id}" not in html
    for word in (
        "noise",
        "mp3",
        '"level"',
        "data-level",
        "a_is_reference",
        "expected_answer",
        "reference_path",
        "/audio/",
    ):
        assert word not in html.lower(), word


@pytest.mark.parametrize(
    "query",
    [
        "",
        f"?{MTURK}",
        "?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1",
        "?PROLIFIC_PID=P1&STUDY_ID=S1&SESSION_ID=X1",
    ],
)
def test_participant_page(app, client, query):
    before = row_counts(app)
    r = client.get(f"/e/demo{query}")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'data-slug="demo"' in html and 'data-api="/api/experiments/demo/sessions"' in html
    assert "participant.js" in html and "jndlab.css" in html
    assert 'aria-live="polite"' in html and '<html lang="en">' in html
    assert re.search(r"<script(?![^>]*src=)[^>]*>", html) is None  # no inline script (CSP)
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "https://www.mturk.com" in csp
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
    _no_leaks(app, html)
    assert row_counts(app) == before  # serving the page creates nothing


def test_page_leaks_nothing_mid_session(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("main")
    html = client.get(f"/e/demo?{MTURK}").get_data(as_text=True)
    _no_leaks(app, html)
    assert p.state["trial"]["clips"][0]["url"] not in html  # tokens come from the API only


def test_unknown_experiment_is_404_html(client):
    r = client.get("/e/nope")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert "Study not found" in r.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/", "/admin/e/demo", "/admin/e/unknown"])
def test_admin_pages_hold_no_data(app, client, path):
    r = client.get(path)
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert "admin.js" in html and "login-form" in html
    from tests.listening_test.lt_helpers import ADMIN_TOKEN

    assert ADMIN_TOKEN not in html
    _no_leaks(app, html)


@pytest.mark.parametrize("name", ["participant.js", "admin.js", "jndlab.css"])
def test_static_files(client, name):
    r = client.get(f"/static/{name}")
    assert r.status_code == 200 and len(r.data) > 1000
    r.close()


def test_main_trials_estimate_from_the_procedure(app):
    from listening_test.models import Experiment

    with app.app_context():
        e = db.session.scalar(select(Experiment))
        # conftest: 1 reference x 2 families x max_trials 4 (no other stop rule), catch_rate 0.2 -> 10
        estimate = ensure_estimate(db.session, e)
        assert estimate["main_trials"] == {"mean": 10.0, "p10": 10.0, "p90": 10.0}
        assert estimate["track_lengths"] == {"4": 120}

"""What API.md says about the endpoints issue 17 added, checked against the server:
stimulus sets, draft mode and launch, the worker drill-down, ``workers=kept|all`` on the
exports, the headphone check's example sounds and ``played`` endpoint, ``study_full`` and
``progress.expected_left``."""

from __future__ import annotations

from pathlib import Path

from .lt_helpers import ADMIN_TOKEN, Participant

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API_MD = Path(__file__).resolve().parents[2] / "listening_test" / "API.md"


def test_api_md_names_every_issue_17_endpoint():
    text = API_MD.read_text(encoding="utf-8")
    for needle in (
        "GET /stimulus-sets",
        "POST /experiments/<slug>/launch",
        "GET /experiments/<slug>/workers/<worker>",
        "workers=kept\\|all",
        "/e/<slug>/example/<test>.wav",
        "/e/<slug>/screening/<trial_id>/played",
        "study_full",
        "progress.expected_left",
        "Draft mode",
        "not_a_draft",
        "worker_not_found",
    ):
        assert needle in text, needle


def test_draft_launch_and_status_replies(app, client, manifest_path):
    r = client.post("/admin/api/experiments", headers=AUTH, json={"manifest": str(manifest_path), "name": "d1"})
    assert r.status_code == 201
    summary = r.get_json()["experiment"]
    assert summary["status"] == "draft" and summary["prolific_screened_out_code"]
    assert client.get("/api/experiments/d1").get_json() == {
        "slug": "d1",
        "name": "d1",
        "test_type": "same_different",
        "accepting": True,
        "draft": True,
    }
    r = client.post("/admin/api/experiments/d1/status", headers=AUTH, json={"status": "active"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "status_refused"
    r = client.post("/admin/api/experiments/d1/launch", headers=AUTH, json={})
    assert r.status_code == 200 and r.get_json()["test_sessions_deleted"] == 0
    assert r.get_json()["experiment"]["status"] == "active" and r.get_json()["experiment"]["launched_at"]
    r = client.post("/admin/api/experiments/d1/launch", headers=AUTH, json={})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "not_a_draft"
    r = client.get("/admin/api/stimulus-sets", headers=AUTH)
    assert r.status_code == 200 and {"stimulus_sets", "searched"} <= set(r.get_json())
    assert any(s["manifest"] == str(manifest_path.resolve()) for s in r.get_json()["stimulus_sets"])


def test_exports_drill_down_and_full_study(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("complete")
    for path, kept, everyone in (
        ("export.csv", "demo-judgments-kept.csv", "demo-judgments-all.csv"),
        ("triplets.txt", "demo-triplets-kept.txt", "demo-triplets-all.txt"),
    ):
        names = []
        for query in ("", "?workers=kept", "?workers=all"):
            r = client.get(f"/admin/api/experiments/demo/{path}{query}", headers=AUTH)
            assert r.status_code == 200
            names.append(r.headers["Content-Disposition"])
        assert kept in names[0] and kept in names[1] and everyone in names[2]
        r = client.get(f"/admin/api/experiments/demo/{path}?workers=some", headers=AUTH)
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "invalid_fields"
    r = client.get("/admin/api/experiments/demo/triplets.txt?kinds=main,catch_obvious&workers=all", headers=AUTH)
    assert "demo-triplets-all-with-catch-obvious.txt" in r.headers["Content-Disposition"]
    stats = client.get("/admin/api/experiments/demo/stats", headers=AUTH).get_json()
    worker = stats["workers"][0]["worker"]
    assert worker == "mturk:W1"
    detail = client.get(f"/admin/api/experiments/demo/workers/{worker}", headers=AUTH).get_json()
    assert {"worker", "verdict", "sessions", "trials"} <= set(detail)
    assert {"session", "index", "kind", "answer", "served_at", "answered_at"} <= set(detail["trials"][0])
    r = client.get("/admin/api/experiments/demo/workers/mturk:nobody", headers=AUTH)
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "worker_not_found"
    # A reached participant target: new visitors get study_full (403) with a message for them.
    with app.app_context():
        from listening_test.db import db
        from listening_test.models import Experiment

        db.session.query(Experiment).filter_by(slug="demo").update({"target_participants": 1})
        db.session.commit()
    other = Participant(
        app,
        app.test_client(),
        {"workerId": "W2", "assignmentId": "A2", "hitId": "H1", "turkSubmitTo": "https://www.mturk.com"},
    )
    r = other.client.post("/api/experiments/demo/sessions", json={"params": other.params})
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "study_full"
    assert "full" in r.get_json()["error"]["message"]


def test_headphone_example_and_played(app, client):
    r = client.get("/e/demo/example/huggins.wav")
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/wav"
    assert client.get("/e/demo/example/nosuch.wav").status_code == 404
    p = Participant(app, client)
    p.land()
    assert client.get("/e/demo/screening/1/played").status_code in (401, 404)
    p.to_stage("screening")
    trial = p.state["trial"]["id"]
    url = f"/e/demo/screening/{trial}/played"
    assert client.get(url).get_json() == {"played": False}
    assert client.post(url, json={}).status_code == 403  # no CSRF header
    assert p.post(url).get_json() == {"played": False}  # had not played before
    assert p.post(url).get_json() == {"played": True}
    assert client.get(url).get_json() == {"played": True}
    r = client.get(f"/e/demo/screening/{trial + 999}/played")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "trial_not_found"

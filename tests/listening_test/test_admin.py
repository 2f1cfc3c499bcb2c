"""Admin API: auth, experiment creation, stats, CSV and triplet export, MTurk XML."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

import pytest
from werkzeug.security import generate_password_hash

from tests.listening_test.lt_helpers import ADMIN_TOKEN, Participant, db_snapshot, make_app

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(
    "path,method",
    [
        ("/admin/api/experiments", "get"),
        ("/admin/api/experiments/demo/stats", "get"),
        ("/admin/api/experiments/demo/export.csv", "get"),
        ("/admin/api/experiments", "post"),
    ],
)
def test_admin_requires_valid_token(app, client, path, method):
    before = db_snapshot(app)
    r = getattr(client, method)(path, json={})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "admin_auth_required"
    r = getattr(client, method)(path, json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403
    assert db_snapshot(app) == before


def test_admin_password_hash(tmp_path, template_db):
    import shutil

    path = tmp_path / "db.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}", ADMIN_TOKEN=None, ADMIN_PASSWORD_HASH=generate_password_hash("s3cret-pass"))
    client = app.test_client()
    assert client.get("/admin/api/experiments", auth=("admin", "s3cret-pass")).status_code == 200
    assert client.get("/admin/api/experiments", auth=("admin", "nope")).status_code == 403


def test_admin_disabled_without_credentials(tmp_path, template_db):
    import shutil

    path = tmp_path / "db.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}", ADMIN_TOKEN=None, ADMIN_PASSWORD_HASH=None)
    r = app.test_client().get("/admin/api/experiments", headers=AUTH)
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "admin_disabled"


def test_create_experiment_via_api(app, client, manifest_path):
    r = client.post(
        "/admin/api/experiments",
        headers=AUTH,
        json={
            "manifest": str(manifest_path),
            "procedure": "bayesian",
            "name": "Second Study",
            "config": {"catch_rate": 0.05},
        },
    )
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["experiment"]["slug"] == "second-study"
    assert client.get("/api/experiments/second-study").get_json()["accepting"] is True
    before = db_snapshot(app)
    bad = client.post(
        "/admin/api/experiments",
        headers=AUTH,
        json={"manifest": str(manifest_path), "procedure": "nope", "name": "third"},
    )
    assert bad.status_code == 422
    dup = client.post(
        "/admin/api/experiments",
        headers=AUTH,
        json={"manifest": str(manifest_path), "procedure": "staircase", "name": "Second Study"},
    )
    assert dup.status_code == 422
    bad_cfg = client.post(
        "/admin/api/experiments",
        headers=AUTH,
        json={"manifest": str(manifest_path), "procedure": "staircase", "name": "x", "config": {"catch_rat": 1}},
    )
    assert bad_cfg.status_code == 422 and "catch_rat" in bad_cfg.get_json()["error"]["message"]
    assert db_snapshot(app) == before


def _complete_one(app, worker="W1", bad_catch=False):
    p = Participant(app, app.test_client(), {"workerId": worker, "assignmentId": f"A-{worker}", "hitId": "H"})
    p.land()
    p.to_stage("main")
    while p.state["stage"] == "main":
        right = p.expected(p.state["trial"]["id"])
        if bad_catch and right is not None:
            p.answer("same" if right == "different" else "different")
        else:
            p.answer()
    return p


def test_stats_and_exports(app, client):
    good = _complete_one(app, "GOOD")
    _complete_one(app, "BAD", bad_catch=True)
    stats = client.get("/admin/api/experiments/demo/stats", headers=AUTH).get_json()
    assert stats["participants"] == 2
    assert stats["sessions_by_stage"] == {"complete": 2}
    assert stats["judgments"] == 16  # 2 participants x 2 tracks x max_trials 4
    assert stats["progress"] == pytest.approx(16 / 100)
    workers = {w["worker_id"]: w for w in stats["workers"]}
    assert workers["GOOD"]["catch_pass_rate"] in (1.0, None)
    if workers["BAD"]["catch_trials"]:
        assert workers["BAD"]["catch_pass_rate"] == 0.0
    assert workers["GOOD"]["judgments"] == 8 and workers["GOOD"]["completed"]

    r = client.get("/admin/api/experiments/demo/export.csv?workers=all", headers=AUTH)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == sum(v["n"] for v in stats["responses_by_kind"].values())
    # The default export keeps the workers the screening keeps: BAD is out whenever its
    # session drew enough catch trials to fail them (the draw depends on the session seed).
    kept = client.get("/admin/api/experiments/demo/export.csv", headers=AUTH)
    kept_rows = list(csv.DictReader(io.StringIO(kept.get_data(as_text=True))))
    excluded = {w["worker_id"] for w in stats["workers"] if w["excluded"]}
    assert "GOOD" not in excluded
    assert kept_rows == [row for row in rows if row["platform_worker_id"] not in excluded]
    main_rows = [row for row in rows if row["kind"] == "main"]
    assert all(row["label"] == ("1" if row["answer"] == "different" else "0") for row in main_rows)
    assert {"play_counts", "response_time_ms", "a_is_reference", "client_info"} <= set(rows[0])

    t = client.get("/admin/api/experiments/demo/triplets.txt?workers=all", headers=AUTH).get_data(as_text=True)
    lines = [line.split("\t") for line in t.strip().splitlines()]
    assert len(lines) == 16
    kept_t = client.get("/admin/api/experiments/demo/triplets.txt", headers=AUTH).get_data(as_text=True)
    assert len(kept_t.strip().splitlines()) == sum(w["judgments"] for w in stats["workers"] if not w["excluded"])
    for ref, test, label, family in lines:
        assert ref.startswith("audio/ref_") and test.startswith(f"audio/{ref[6:11]}_{family}_")
        assert label in ("0", "1")
    assert good.state["stage"] == "complete"


def test_mturk_question_xml(client):
    r = client.get("/admin/api/experiments/demo/mturk-question.xml?base_url=https://lab.example.org/jnd", headers=AUTH)
    assert r.status_code == 200
    root = ET.fromstring(r.data)  # noqa: S314 - our own server's reply
    ns = {"q": root.tag.split("}")[0][1:]}
    assert root.find("q:ExternalURL", ns).text == "https://lab.example.org/jnd/e/demo"
    assert root.find("q:FrameHeight", ns).text == "0"
    bad = client.get("/admin/api/experiments/demo/mturk-question.xml?base_url=http://insecure", headers=AUTH)
    assert bad.status_code == 422


def test_closed_experiment_rejects_new_but_resumes_old(app, client):
    p = Participant(app, client)
    p.land()
    assert client.post("/admin/api/experiments/demo/status", json={"status": "closed"}, headers=AUTH).status_code == 200
    assert p.land().status_code == 200  # resume still works
    r = app.test_client().post(
        "/api/experiments/demo/sessions", json={"params": {"workerId": "NEW", "assignmentId": "A", "hitId": "H"}}
    )
    assert r.status_code == 403 and r.get_json()["error"]["code"] == "experiment_closed"

"""The A/B preference test type: creation rules, the participant flow, storage and export."""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter

import pytest
from flask_migrate import upgrade
from sqlalchemy import select

from listening_test.db import db
from listening_test.manifest_import import ManifestError, create_experiment
from listening_test.models import AudioToken, Response, Stimulus, Track, Trial
from tests.listening_test.lt_helpers import (
    AB_FLOW_CONFIG,
    ADMIN_TOKEN,
    Participant,
    db_snapshot,
    make_app,
    pg_app,
    write_ab_set,
)


@pytest.fixture(scope="module")
def ab_manifest(tmp_path_factory):
    return write_ab_set(tmp_path_factory.mktemp("ab"), n_items=4)


def _create(app, manifest, config=None, procedure_config=None, **kwargs):
    with app.app_context():
        experiment = create_experiment(
            db.session,
            manifest,
            name="demo",
            test_type="ab_preference",
            config=AB_FLOW_CONFIG if config is None else config,
            procedure_config=procedure_config,
            **kwargs,
        )
        db.session.commit()
        return experiment.id


@pytest.fixture
def ab_app(tmp_path, template_db, ab_manifest):
    path = tmp_path / "ab.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}")
    _create(app, ab_manifest, procedure_config={"repeats": 2})
    yield app
    with app.app_context():
        db.engine.dispose()


def _clip_systems(app, trial_id):
    """The system behind each slot of a trial, read from its audio tokens and the stimuli."""
    with app.app_context():
        rows = db.session.execute(
            select(AudioToken.slot, Stimulus.family)
            .join(Stimulus, Stimulus.id == AudioToken.stimulus_id)
            .where(AudioToken.trial_id == trial_id)
            .order_by(AudioToken.slot)
        ).all()
    return [family for _, family in rows]


def test_a_trial_plays_the_reference_then_two_systems_and_takes_a_or_b(ab_app):
    p = Participant(ab_app, ab_app.test_client())
    assert p.land().status_code == 201
    p.to_stage("main")
    trial = p.state["trial"]
    assert trial["prompt"] == "ab_preference" and trial["choices"] == ["A", "B"]
    assert [c["label"] for c in trial["clips"]] == ["Reference", "A", "B"]
    with ab_app.app_context():
        stored = db.session.get(Trial, trial["id"])
        systems, kind = stored.spec["systems"], stored.kind
    assert _clip_systems(ab_app, trial["id"])[0] == "reference"
    if kind == "main":
        assert sorted(systems) == ["bad", "good"] and _clip_systems(ab_app, trial["id"])[1:] == systems
    # The payload never names a system; the URLs are opaque.
    assert "good" not in str(trial) and "bad" not in str(trial)


@pytest.mark.parametrize("bad", [{"answer": "same"}, {"answer": "C"}, {"play_counts": [1, 1]}])
def test_a_same_different_answer_or_two_play_counts_is_refused_and_changes_nothing(ab_app, bad):
    p = Participant(ab_app, ab_app.test_client())
    p.land()
    p.to_stage("main")
    before = db_snapshot(ab_app)
    r = p.post("/api/session/answer", {**p.answer_body("A"), **bad})
    assert r.status_code == 422, r.get_json()
    assert r.get_json()["error"]["code"] == "invalid_fields"
    assert db_snapshot(ab_app) == before


def test_catch_and_practice_trials_expect_the_side_that_is_the_clean_copy(ab_app):
    p = Participant(ab_app, ab_app.test_client())
    p.land()
    p.to_stage("practice")
    seen = Counter()
    while p.state["stage"] in ("practice", "main"):
        trial = p.state["trial"]
        with ab_app.app_context():
            stored = db.session.get(Trial, trial["id"])
            kind, expected, spec = stored.kind, stored.expected_answer, stored.spec
        seen[kind] += 1
        if kind in ("practice", "catch_anchor"):
            clips = _clip_systems(ab_app, trial["id"])
            clean_side = "A" if clips[1] == "reference" else "B"
            assert clips[0] == "reference" and sorted(clips[1:]) == ["noisy", "reference"]
            assert expected == clean_side
            assert spec["systems"][0 if clean_side == "A" else 1] == "reference"
            reply = p.answer("B" if clean_side == "A" else "A")  # wrong on purpose
            if kind == "practice":
                assert reply["feedback"] == {"correct": False, "expected": clean_side}
            else:
                assert reply["feedback"] is None  # no feedback outside practice
        else:
            assert expected is None
            p.answer("A")
    assert seen["practice"] == AB_FLOW_CONFIG["practice_trials"]
    # 3 items x 1 pair x 2 repeats main trials; catch trials within one of 25 % of the main phase
    assert seen["main"] == 6
    assert abs(seen["catch_anchor"] - 0.25 * (seen["main"] + seen["catch_anchor"])) <= 1
    with ab_app.app_context():
        wrong = db.session.scalars(
            select(Response.is_correct).join(Trial, Trial.id == Response.trial_id).where(Trial.kind == "catch_anchor")
        ).all()
    assert wrong and not any(wrong)


def _finish_main(p):
    while p.state["stage"] in ("screening", "practice", "main", "consent", "volume", "instructions"):
        if p.state["stage"] == "main":
            p.answer("A")
        else:
            p.to_stage("main")


def test_each_pair_is_heard_in_both_orders_with_two_repeats(ab_app):
    p = Participant(ab_app, ab_app.test_client())
    p.land()
    _finish_main(p)
    assert p.state["stage"] == "complete"
    with ab_app.app_context():
        rows = db.session.execute(select(Trial.track_id, Trial.spec).where(Trial.kind == "main")).all()
        tracks = db.session.scalars(select(Track)).all()
    assert len(tracks) == 3 and all(t.finished and t.n_trials == 2 for t in tracks)
    orders = {}
    for track_id, spec in rows:
        orders.setdefault(track_id, []).append(tuple(spec["systems"]))
    for track_orders in orders.values():
        assert sorted(track_orders) == [("bad", "good"), ("good", "bad")]


def test_orders_balance_across_a_participants_items_with_one_repeat(tmp_path, template_db, tmp_path_factory):
    manifest = write_ab_set(tmp_path_factory.mktemp("ab6"), n_items=6)
    shutil.copy(template_db, tmp_path / "db.sqlite")
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    _create(app, manifest, config={**AB_FLOW_CONFIG, "references_per_participant": 6, "catch_rate": 0.0})
    for worker in ("W1", "W2", "W3"):
        p = Participant(
            app, app.test_client(), params={"workerId": worker, "assignmentId": f"A-{worker}", "hitId": "H1"}
        )
        p.land()
        _finish_main(p)
    with app.app_context():
        rows = db.session.execute(select(Trial.session_id, Trial.spec).where(Trial.kind == "main")).all()
    by_session = Counter((sid, spec["systems"][0]) for sid, spec in rows)
    for sid in {sid for sid, _ in rows}:
        assert by_session[(sid, "good")] == by_session[(sid, "bad")] == 3  # 6 items: 3 each way


def test_a_reload_returns_the_same_trial_and_a_double_submit_is_a_duplicate(ab_app):
    p = Participant(ab_app, ab_app.test_client())
    p.land()
    p.to_stage("main")
    trial = p.state["trial"]
    again = p.client.get("/api/session").get_json()["state"]["trial"]
    assert again == trial
    body = p.answer_body("B")
    first = p.post("/api/session/answer", body).get_json()
    second = p.post("/api/session/answer", body).get_json()
    assert first["duplicate"] is False and second["duplicate"] is True
    with ab_app.app_context():
        assert db.session.scalar(select(Response.answer).where(Response.trial_id == trial["id"])) == "B"


def test_export_names_the_preferred_system_and_triplets_are_refused(ab_app):
    p = Participant(ab_app, ab_app.test_client())
    p.land()
    _finish_main(p)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = ab_app.test_client()
    r = client.get("/admin/api/experiments/demo/export.csv", headers=headers)
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    main = [row for row in rows if row["kind"] == "main"]
    assert len(main) == 6
    for row in main:
        assert row["answer"] == "A" and row["preferred_system"] == row["system_a"]
        assert {row["system_a"], row["system_b"]} == {"good", "bad"} and row["label"] == ""
    r = client.get("/admin/api/experiments/demo/triplets.txt", headers=headers)
    assert r.status_code == 409 and "A/B preference" in r.get_json()["error"]["message"]
    stats = client.get("/admin/api/experiments/demo/stats", headers=headers).get_json()
    assert stats["experiment"]["test_type"] == "ab_preference"
    assert "catch_anchor" in stats["catch_pass_rate_by_kind"]


@pytest.mark.parametrize(
    "config, procedure, message",
    [
        ({**AB_FLOW_CONFIG, "anchor_system": None}, None, "set anchor_system"),
        ({**AB_FLOW_CONFIG, "anchor_system": "nope"}, None, "is not one of the systems"),
        (AB_FLOW_CONFIG, "bayesian", "uses procedure 'paired'"),
        ({**AB_FLOW_CONFIG, "families_per_participant": 1}, None, "same/different setting"),
    ],
)
def test_creation_refuses_an_inconsistent_ab_design(tmp_path, template_db, ab_manifest, config, procedure, message):
    shutil.copy(template_db, tmp_path / "db.sqlite")
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with app.app_context(), pytest.raises(ValueError, match=message):
        create_experiment(
            db.session, ab_manifest, name="x", test_type="ab_preference", procedure=procedure, config=config
        )


def test_creation_refuses_an_item_without_every_system(tmp_path, template_db, ab_manifest):
    text = ab_manifest.read_text().splitlines()
    kept = [line for line in text if not line.startswith("utt01__bad,")]
    assert len(kept) == len(text) - 1
    broken = ab_manifest.parent / "broken.csv"
    broken.write_text("\n".join(kept) + "\n")
    shutil.copy(template_db, tmp_path / "db.sqlite")
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with app.app_context(), pytest.raises(ValueError, match=r"item 'utt01' has no output of system\(s\) \['bad'\]"):
        create_experiment(db.session, broken, name="x", test_type="ab_preference", config=AB_FLOW_CONFIG)


def test_a_same_different_test_refuses_the_paired_procedure(tmp_path, template_db, manifest_path):
    shutil.copy(template_db, tmp_path / "db.sqlite")
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with app.app_context(), pytest.raises((ValueError, ManifestError), match="adaptive procedure"):
        create_experiment(db.session, manifest_path, name="x", procedure="paired")


def test_cli_creates_an_ab_experiment_with_its_default_procedure(tmp_path, template_db, ab_manifest):
    shutil.copy(template_db, tmp_path / "db.sqlite")
    app = make_app(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = app.test_cli_runner().invoke(
        args=[
            "experiment",
            "create",
            "--manifest",
            str(ab_manifest),
            "--test-type",
            "ab_preference",
            "--name",
            "ab",
            "--config",
            '{"anchor_system": "noisy"}',
        ]
    )
    assert result.exit_code == 0, result.output
    assert "ab_preference" in result.output and "procedure paired" in result.output
    bad = app.test_cli_runner().invoke(
        args=["experiment", "create", "--manifest", str(ab_manifest), "--test-type", "ab_preference", "--name", "ab2"]
    )
    assert bad.exit_code != 0 and "anchor_system" in bad.output


@pytest.mark.postgres
def test_the_ab_flow_on_postgresql(pg_schema, ab_manifest):
    app = pg_app(pg_schema)
    with app.app_context():
        upgrade()
    _create(app, ab_manifest)
    try:
        p = Participant(app, app.test_client())
        assert p.land().status_code == 201
        _finish_main(p)
        assert p.state["stage"] == "complete"
        with app.app_context():
            answers = db.session.scalars(
                select(Response.answer).join(Trial, Trial.id == Response.trial_id).where(Trial.kind == "main")
            ).all()
        assert answers == ["A"] * 3
    finally:
        with app.app_context():
            db.engine.dispose()


def test_the_page_speaks_of_the_ab_task_and_estimates_its_length(ab_app):
    page = ab_app.test_client().get("/e/demo").get_data(as_text=True)
    # 3 items x 1 pair x 2 repeats = 6 main trials, plus catch trials at 25 %: 8
    assert 'data-main-estimate="8"' in page
    assert 'data-test-type="ab_preference"' in page and "closer to the reference" in page

"""Analysis of A/B preference judgments read from a listening-test database.

The database is built the way the app builds one (Alembic upgrade, then the experiment
from a written stimulus set); sessions, tracks, trials, audio tokens and answers of
simulated workers with known preferences go in directly through the models' tables,
following the A/B storage contract (spec = {"systems": [A, B], "stimuli": [id A, id B]}).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, func, insert, select

from analysis.__main__ import main
from analysis.ab_judgments import AB_COLUMNS, load_ab_judgments
from analysis.judgments import JudgmentsError
from analysis.preference import analyse_preferences, summarize_pair, write_preference_report
from analysis.screening import ABScreeningRules, screen_ab_workers
from listening_test.manifest_import import create_experiment
from tests.analysis.an_helpers import insert_completed_session, write_stimulus_set
from tests.manifests import ManifestWriter

SR = 16000
SYSTEMS = ("l1", "metric_l1")  # compared on main trials
ANCHOR = "noisy"  # only on catch and practice trials
PAIR = "l1|metric_l1"
ITEMS = tuple(f"item{i:02d}" for i in range(24))
TRUE_SHARE = 0.75  # P(a good listener prefers metric_l1 over l1)
AB_CONFIG = {"anchor_system": ANCHOR, "references_per_participant": len(ITEMS), "screening": {"tests": []}}


# ----------------------------------------------------------------------------- database helpers


def write_ab_stimulus_set(folder: Path) -> Path:
    """Per item: the clean clip (family reference) and one output per system (family = system name)."""
    rng = np.random.default_rng(0)
    out = ManifestWriter(folder, SR)
    for item in ITEMS:
        clean = 0.1 * rng.standard_normal(SR // 50)
        out.add(item, item, "reference", 0.0, clean, seed="")
        for k, system in enumerate(SYSTEMS + (ANCHOR,)):
            out.add(
                f"{item}_{system}",
                item,
                system,
                0.0,
                clean + 0.01 * (k + 1) * rng.standard_normal(len(clean)),
                {"system": system, "source": f"{system}/{item}.wav", "gain_db": 0.0},
                seed="",
            )
    return out.write()


def build_databases(app, folder: Path) -> None:
    """Upgrade the app's database and create a same/different ('demo') and an A/B ('ab') experiment."""
    from flask_migrate import upgrade

    from listening_test.db import db

    with app.app_context():
        upgrade()
        create_experiment(
            db.session,
            write_stimulus_set(folder / "sd"),
            procedure="staircase",
            name="demo",
            procedure_config={"max_trials": 4, "max_reversals": None},
            config={"references_per_participant": 1, "screening": {"tests": []}},
        )
        create_experiment(
            db.session,
            write_ab_stimulus_set(folder / "ab"),
            procedure="paired",
            name="ab",
            test_type="ab_preference",
            config=AB_CONFIG,
        )
        db.session.commit()
        db.engine.dispose()  # checkpoints the WAL into the main file before it is copied


def _app(url: str, **engine_options):
    from listening_test import create_app

    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "test-secret-key-0123456789"}
    if engine_options:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
    return create_app(config)


@dataclass(frozen=True)
class ABWorker:
    worker_id: str
    p_prefer: float = TRUE_SHARE  # P(prefers metric_l1) on a main trial; 0.5 = no preference
    catch_p: float = 0.97  # P(picks the clean side on catch and practice trials)
    n_catch: int = 12
    headphone_passed: bool | None = True
    skipped: int = 0  # main trials on which clip B was never played
    bias_a: float = 0.0  # P(answers "A" whatever was heard)
    items: tuple[str, ...] = ITEMS


def clicker(worker_id: str) -> ABWorker:
    return ABWorker(worker_id, p_prefer=0.5, catch_p=0.5, bias_a=0.0)


def fill_ab(
    engine,
    workers: list[ABWorker],
    rng: np.random.Generator,
    *,
    slug: str = "ab",
    kinds: tuple[str, ...] = ("screening", "practice", "main", "catch_anchor"),
) -> dict:
    """One completed session per worker; returns {(worker_id, trial_index): preferred system}."""
    from listening_test.models import AudioToken, Experiment, Response, Session, Stimulus, Track, Trial

    truth = {}
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        exp_id = conn.execute(select(Experiment.id).where(Experiment.slug == slug)).scalar_one()
        stim = {
            (r.reference, r.family): r.id
            for r in conn.execute(
                select(Stimulus.id, Stimulus.reference, Stimulus.family).where(Stimulus.experiment_id == exp_id)
            )
        }
        for w_index, w in enumerate(workers):
            pid, sid = insert_completed_session(
                conn, exp_id, w.worker_id, w_index, w.headphone_passed, t0, public_id=f"s-{slug}-{w.worker_id}"
            )
            tracks = {}
            if "main" in kinds:
                for item in w.items:
                    a_first = bool(rng.integers(0, 2))
                    tracks[item] = conn.execute(
                        insert(Track).values(
                            session_id=sid,
                            participant_id=pid,
                            experiment_id=exp_id,
                            reference=item,
                            family=PAIR,
                            procedure_state={"repeats": 1, "a_first": [a_first]},
                            n_trials=1,
                            finished=True,
                        )
                    ).inserted_primary_key[0]
            plan = [("screening", None)] if "screening" in kinds else []
            plan += [("practice", ITEMS[i]) for i in range(2)] if "practice" in kinds else []
            body = [("main", item) for item in w.items] if "main" in kinds else []
            if "catch_anchor" in kinds:
                body += [("catch_anchor", ITEMS[i % len(ITEMS)]) for i in range(w.n_catch)]
            plan += [body[j] for j in rng.permutation(len(body))]
            skip_left = w.skipped
            trials, answers, tokens = [], [], []
            for index, (kind, item) in enumerate(plan):
                served = t0 + timedelta(hours=w_index, seconds=5 * index)
                plays = [1, 1, 1]
                if kind == "screening":
                    spec, ref_id, clips, expected = {"test": "huggins", "target": 2}, None, [None] * 3, "2"
                    answer = "2" if w.headphone_passed is not False else "1"
                    fields = dict(family=None, a_is_reference=None, track_id=None, test_stimulus_id=None)
                elif kind == "main":
                    systems = list(SYSTEMS) if rng.random() < 0.5 else list(reversed(SYSTEMS))
                    clips = [stim[(item, s)] for s in systems]
                    preferred = "metric_l1" if rng.random() < w.p_prefer else "l1"
                    answer = "A" if preferred == systems[0] else "B"
                    if rng.random() < w.bias_a:
                        answer, preferred = "A", systems[0]
                    truth[(w.worker_id, index)] = preferred
                    spec, ref_id, expected = {"systems": systems, "stimuli": clips}, stim[(item, "reference")], None
                    fields = dict(family=PAIR, a_is_reference=None, track_id=tracks[item], test_stimulus_id=clips[0])
                    if skip_left:
                        plays, skip_left = [1, 1, 0], skip_left - 1
                else:  # practice, catch_anchor: the clean copy against the anchor
                    a_is_ref = bool(rng.integers(0, 2))
                    systems = ["reference", ANCHOR] if a_is_ref else [ANCHOR, "reference"]
                    clips = [stim[(item, s)] for s in systems]
                    expected = "A" if a_is_ref else "B"
                    correct = rng.random() < w.catch_p
                    answer = expected if correct else ("B" if expected == "A" else "A")
                    spec, ref_id = {"systems": systems, "stimuli": clips}, stim[(item, "reference")]
                    fields = dict(
                        family=f"reference|{ANCHOR}", a_is_reference=a_is_ref, track_id=None, test_stimulus_id=clips[0]
                    )
                trials.append(
                    dict(
                        session_id=sid,
                        trial_index=index,
                        kind=kind,
                        reference_stimulus_id=ref_id,
                        level=None,
                        spec=spec,
                        expected_answer=expected,
                        nonce=f"n{sid}-{index}",
                        answered=True,
                        served_at=served,
                        **fields,
                    )
                )
                answers.append(
                    dict(
                        answer=answer,
                        is_correct=None if expected is None else answer == expected,
                        response_time_ms=int(1500 * (0.8 + 0.4 * rng.random())),
                        play_counts=plays,
                        client_info={"focus_lost": 0},
                        created_at=served + timedelta(seconds=3),
                    )
                )
                tokens.append([ref_id] + clips[:2] if kind != "screening" else [None, None, None])
            # explicit ids so that trials, tokens and answers go in as batches
            next_id = (conn.execute(select(func.max(Trial.id))).scalar() or 0) + 1
            for offset, (t, a) in enumerate(zip(trials, answers)):
                t["id"] = next_id + offset
                a.update(trial_id=t["id"], session_id=sid, trial_index=t["trial_index"])
            conn.execute(insert(Trial), trials)
            conn.execute(
                insert(AudioToken),
                [
                    dict(
                        token=f"tok-{t['id']}-{slot}",
                        session_id=sid,
                        trial_id=t["id"],
                        slot=slot,
                        stimulus_id=s,
                        generated={"screening": True} if s is None else None,
                    )
                    for t, clip_ids in zip(trials, tokens)
                    for slot, s in enumerate(clip_ids)
                ],
            )
            conn.execute(insert(Response), answers)
            conn.execute(Session.__table__.update().where(Session.id == sid).values(n_trials=len(trials)))
    return truth


GOOD = [ABWorker(f"good{i:02d}") for i in range(16)]
BAD = [
    clicker("clicker"),
    ABWorker("noheadphones", p_prefer=0.0, headphone_passed=False),  # prefers l1: must not count
    ABWorker("skipper", skipped=3),
    ABWorker("nocatch", n_catch=0),
]


@pytest.fixture(scope="module")
def ab_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ab_db")
    path = folder / "template.sqlite"
    build_databases(_app(f"sqlite:///{path}"), folder)
    return path


@pytest.fixture(scope="module")
def ab_db(ab_template, tmp_path_factory) -> tuple[Path, dict]:
    """16 good workers (true share 0.75) and 4 to screen; tests must only read it."""
    path = tmp_path_factory.mktemp("ab_filled") / "jndlab.sqlite"
    shutil.copy(ab_template, path)
    engine = create_engine(f"sqlite:///{path}")
    truth = fill_ab(engine, GOOD + BAD, np.random.default_rng(3))
    engine.dispose()
    return path, truth


@pytest.fixture(scope="module")
def ab_judgments(ab_db) -> pd.DataFrame:
    return load_ab_judgments(ab_db[0], experiment="ab")


@pytest.fixture
def fresh_ab(ab_template, tmp_path) -> Path:
    path = tmp_path / "jndlab.sqlite"
    shutil.copy(ab_template, path)
    return path


# ----------------------------------------------------------------------------- the tidy table


def test_tidy_table_follows_the_storage_contract(ab_judgments, ab_db):
    df = ab_judgments
    assert list(df.columns) == AB_COLUMNS
    assert set(df["kind"]) == {"screening", "practice", "main", "catch_anchor"}
    main_rows = df[df["kind"] == "main"]
    assert len(main_rows) == 20 * len(ITEMS) and set(main_rows["pair"]) == {PAIR}
    assert set(main_rows["item"]) == set(ITEMS)
    # the preferred system is the one presented on the side answered, as inserted
    truth = ab_db[1]
    assert [truth[(w, int(i))] for w, i in zip(main_rows["worker_id"], main_rows["trial_index"])] == list(
        main_rows["preferred"]
    )
    a_side = main_rows["answer"] == "A"
    assert (main_rows.loc[a_side, "preferred"] == main_rows.loc[a_side, "system_a"]).all()
    assert (main_rows.loc[~a_side, "preferred"] == main_rows.loc[~a_side, "system_b"]).all()
    assert (main_rows["stimulus_a"] == main_rows["item"] + "_" + main_rows["system_a"]).all()
    assert (main_rows["stimulus_b"] == main_rows["item"] + "_" + main_rows["system_b"]).all()
    catch = df[df["kind"] == "catch_anchor"]
    assert set(catch["system_a"]) | set(catch["system_b"]) == {"reference", ANCHOR}
    assert (catch["is_correct"] == (catch["answer"] == catch["expected_answer"])).all()
    row = df[df["worker_id"] == "good00"].iloc[0]
    assert row["worker"] == "prolific:good00" and row["session"] == "s-ab-good00"
    skipper = main_rows[main_rows["worker_id"] == "skipper"]
    assert int(skipper["skipped_playback"].sum()) == 3 and int((skipper["plays_b"] == 0).sum()) == 3
    assert df["answered_at"].str.endswith("Z").all()


# ----------------------------------------------------------------------------- screening


def test_screening_excludes_clicker_and_headphone_failure_only(ab_judgments):
    table = screen_ab_workers(ab_judgments).set_index("worker")
    assert table.loc["prolific:clicker", "excluded"]
    assert table.loc["prolific:clicker", "catch_accuracy"] < 0.8
    assert "catch accuracy" in table.loc["prolific:clicker", "reasons"]
    assert table.loc["prolific:noheadphones", "reasons"] == "failed the headphone screen"
    assert not table.loc["prolific:skipper", "excluded"]
    assert "skipped playback on 3 of 24 main trials" in table.loc["prolific:skipper", "flags"]
    assert not table.loc["prolific:nocatch", "excluded"]
    assert "no catch trials" in table.loc["prolific:nocatch", "flags"]
    good = table[table.index.str.contains("good")]
    assert len(good) == 16 and not good["excluded"].any() and (good["catch_accuracy"] >= 0.8).all()
    strict = screen_ab_workers(ab_judgments, ABScreeningRules(exclude_skipped_playback=True)).set_index("worker")
    assert strict.loc["prolific:skipper", "excluded"]
    lenient = screen_ab_workers(ab_judgments, ABScreeningRules(min_catch_accuracy=None)).set_index("worker")
    assert not lenient.loc["prolific:clicker", "excluded"]
    with pytest.raises(ValueError, match="min_catch_accuracy"):
        ABScreeningRules(min_catch_accuracy=80)


# ----------------------------------------------------------------------------- summaries


def test_known_preference_is_recovered_within_its_intervals(ab_judgments):
    a = analyse_preferences(ab_judgments, n_boot=1000, seed=0)
    assert {w for w in a.included["worker"]} == {f"prolific:{w.worker_id}" for w in GOOD} | {
        "prolific:skipper",
        "prolific:nocatch",
    }
    (s,) = a.pairs
    assert (s.system, s.other, s.pair) == ("metric_l1", "l1", PAIR)
    assert s.pooled.n == 18 * len(ITEMS) and s.n_items == len(ITEMS) and s.n_listeners == 18
    assert s.pooled.ci_low < TRUE_SHARE < s.pooled.ci_high and s.pooled.ci_low > 0.5 and s.pooled.p_value < 1e-6
    b = s.listener_bootstrap
    assert b.ci_low < TRUE_SHARE < b.ci_high and b.n_clusters == 18 and b.share == pytest.approx(s.pooled.share)
    # 18 judgments per item at 0.75: nearly every item's majority prefers metric_l1
    assert s.by_item.wins + s.by_item.losses + s.by_item.ties == len(ITEMS) and s.by_item.wins >= 20
    assert s.by_listener.wins >= 15
    # A/B order is random and nobody here has a side bias
    assert s.position.ci_low < 0.5 < s.position.ci_high
    items = a.by_item.set_index("item")
    assert len(items) == len(ITEMS) and (items["n"] == 18).all()
    assert items["wins"].sum() == s.pooled.wins and (items["wins"] + items["losses"] == items["n"]).all()
    assert a.by_listener["n"].sum() == s.pooled.n
    line = s.describe()
    assert re.match(
        r"metric_l1 preferred over l1 in \d+/432 judgments: 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] "
        r"\(Clopper-Pearson 95%\), p = [0-9.]+e-\d+; by item \d+/\d+: ",
        line,
    ), line
    assert "listener bootstrap 95% [" in line


def test_excluded_workers_would_have_moved_the_result(ab_judgments):
    # the headphone failure always prefers l1: with every worker counted the share drops
    kept = analyse_preferences(ab_judgments, n_boot=0).pairs[0].pooled
    everyone = analyse_preferences(
        ab_judgments, ABScreeningRules(min_catch_accuracy=None, require_headphone_screen=False), n_boot=0
    )
    assert everyone.pairs[0].pooled.n == 20 * len(ITEMS) and everyone.pairs[0].pooled.share < kept.share


def _synthetic(p_by_worker: dict[str, float], n_items: int, seed: int, bias_a: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for worker, p in p_by_worker.items():
        for i in range(n_items):
            systems = ["l1", "metric_l1"] if rng.random() < 0.5 else ["metric_l1", "l1"]
            preferred = "metric_l1" if rng.random() < p else "l1"
            if rng.random() < bias_a:
                preferred = systems[0]
            rows.append(
                {
                    "worker": worker,
                    "item": f"i{i}",
                    "pair": PAIR,
                    "kind": "main",
                    "system_a": systems[0],
                    "system_b": systems[1],
                    "preferred": preferred,
                    "answer": "A" if preferred == systems[0] else "B",
                }
            )
    return pd.DataFrame(rows)


def test_listener_bootstrap_is_wider_than_pooled_ci_when_listeners_disagree():
    # half the listeners strongly prefer metric_l1, half barely: the judgments are clustered
    split = _synthetic({f"w{i}": (0.95 if i % 2 else 0.55) for i in range(20)}, 40, seed=4)
    s = summarize_pair(PAIR, split, n_boot=2000, seed=0)
    assert (s.listener_bootstrap.ci_high - s.listener_bootstrap.ci_low) > 2 * (s.pooled.ci_high - s.pooled.ci_low)
    assert s.by_listener.n + s.by_listener.ties == 20


def test_position_bias_is_measured():
    biased = summarize_pair(PAIR, _synthetic({f"w{i}": 0.75 for i in range(10)}, 40, seed=5, bias_a=0.4), n_boot=0)
    # P("A") = 0.4 + 0.6 * 0.5 = 0.7
    assert biased.position.ci_low < 0.7 < biased.position.ci_high and biased.position.ci_low > 0.5
    assert "A chosen in" in biased.describe()


# ----------------------------------------------------------------------------- report and CLI


def test_report_files_and_cli(ab_db, tmp_path, capsys):
    path = ab_db[0]
    out = tmp_path / "report"
    # a plain path works as well as a URL
    assert (
        main(
            [
                "preference",
                "--db",
                str(path),
                "--experiment",
                "ab",
                "--out",
                str(out),
                "--bootstrap",
                "300",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "metric_l1 preferred over l1 in" in printed and f"wrote {out / 'index.html'}" in printed
    assert "excluded prolific:clicker (catch accuracy" in printed
    for name in (
        "preference.json",
        "preference_by_item.csv",
        "preference_by_listener.csv",
        "judgments.csv",
        "workers.csv",
        "excluded_workers.csv",
        "preference_shares.png",
        "preference_by_item.png",
        "index.html",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "preference.json").read_text())
    assert report["experiment"] == "ab" and report["settings"]["bootstrap_replicates"] == 300
    assert report["settings"]["rules"]["min_catch_accuracy"] == 0.8
    (pair,) = report["pairs"]
    assert pair["system"] == "metric_l1" and pair["pooled"]["n"] == 18 * len(ITEMS)
    assert pair["listener_bootstrap"]["seed"] == 1
    excluded = pd.read_csv(out / "excluded_workers.csv")
    assert sorted(excluded["worker"]) == ["prolific:clicker", "prolific:noheadphones"]
    assert len(pd.read_csv(out / "preference_by_item.csv")) == len(ITEMS)
    assert len(pd.read_csv(out / "judgments.csv")) == len(load_ab_judgments(path))
    html = (out / "index.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and "failed the headphone screen" in html
    # seeded: the same command writes the same numbers
    again = write_preference_report(f"sqlite:///{path}", tmp_path / "again", experiment="ab", n_boot=300, seed=1)
    assert (tmp_path / "again" / "preference.json").read_text() == (out / "preference.json").read_text()
    assert again.index_html == tmp_path / "again" / "index.html"


def test_cli_options_change_the_screening(ab_db, tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "preference",
                "--db",
                str(ab_db[0]),
                "--out",
                str(out),
                "--bootstrap",
                "0",
                "--min-catch-accuracy",
                "none",
                "--exclude-skipped-playback",
            ]
        )
        == 0
    )
    excluded = pd.read_csv(out / "excluded_workers.csv")
    assert sorted(excluded["worker"]) == ["prolific:noheadphones", "prolific:skipper"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["preference", "--db", str(ab_db[0]), "--out", str(out), "--min-catch-accuracy", "2"])
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_reads_what_the_web_app_stores(tmp_path):
    """Two participants through the real HTTP flow: one always picks 'good', one always clip A."""
    from flask_migrate import upgrade

    from listening_test.db import db
    from listening_test.models import Trial
    from tests.listening_test.lt_helpers import AB_FLOW_CONFIG, Participant, make_app, write_ab_set

    path = tmp_path / "web.sqlite"
    app = make_app(f"sqlite:///{path}")
    with app.app_context():
        upgrade()
        create_experiment(
            db.session,
            write_ab_set(tmp_path / "set", n_items=4),
            name="demo",
            test_type="ab_preference",
            config=AB_FLOW_CONFIG,
            procedure_config={"repeats": 2},
        )
        db.session.commit()
    chosen = {}
    for worker in ("W1", "W2"):
        p = Participant(
            app, app.test_client(), params={"workerId": worker, "assignmentId": f"A-{worker}", "hitId": "H1"}
        )
        p.land()
        p.to_stage("main")
        while p.state["stage"] == "main":
            trial = p.state["trial"]
            with app.app_context():
                stored = db.session.get(Trial, trial["id"])
                kind, systems, expected = stored.kind, stored.spec["systems"], stored.expected_answer
            if kind == "main":
                answer = "A" if worker == "W2" or systems[0] == "good" else "B"
                chosen[trial["id"]] = systems[0 if answer == "A" else 1]
            else:
                answer = expected  # catch trials right: both workers are kept
            p.answer(answer)
        assert p.state["stage"] == "complete"
    with app.app_context():
        db.engine.dispose()
    df = load_ab_judgments(path)  # the only A/B experiment
    main_rows = df[df["kind"] == "main"]
    assert dict(zip(main_rows["trial_id"], main_rows["preferred"])) == chosen
    assert set(main_rows["pair"]) == {"bad|good"} and set(df["kind"]) >= {"screening", "practice", "main"}
    assert (main_rows["plays_a"] == 1).all() and df["screening_passed"].all()
    assert (main_rows.groupby("worker")["item"].nunique() == 3).all() and main_rows["item"].notna().all()
    assert not (main_rows["stimulus_a"] == main_rows["item"]).any()  # the clean clip is the reference slot
    (s,) = analyse_preferences(df, n_boot=100).pairs
    # 3 items x 2 repeats in both orders: W1 picks good 6/6, W2 (always A) 3/6
    assert (s.system, s.pooled.wins, s.pooled.n) == ("good", 9, 12)
    assert (s.position.wins, s.position.n) == (9, 12) and s.n_listeners == 2


# ----------------------------------------------------------------------------- errors


def test_every_error_names_the_database_and_the_problem(ab_db, fresh_ab, tmp_path, capsys):
    path = ab_db[0]
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(JudgmentsError, match=r"no SQLite database file at .*missing\.sqlite"):
        load_ab_judgments(missing)
    with pytest.raises(JudgmentsError, match="no SQLite database file"):
        load_ab_judgments(f"sqlite:///{missing}")
    blank = tmp_path / "blank.sqlite"
    blank.touch()
    with pytest.raises(JudgmentsError, match=r"blank\.sqlite: not a jndlab listening-test database"):
        load_ab_judgments(blank)
    with pytest.raises(
        JudgmentsError,
        match=r"jndlab\.sqlite: no experiment 'nope' \(experiments: "
        r"demo \(same_different\), ab \(ab_preference\)\)",
    ):
        load_ab_judgments(path, experiment="nope")
    with pytest.raises(JudgmentsError, match="experiment 'demo' is a same_different test, not ab_preference"):
        load_ab_judgments(path, experiment="demo")
    with pytest.raises(
        JudgmentsError,
        match="experiment 'ab' has no answered main trials yet "
        r"\(no answered trials at all\)",
    ):
        load_ab_judgments(fresh_ab)
    engine = create_engine(f"sqlite:///{fresh_ab}")
    fill_ab(engine, [ABWorker("early")], np.random.default_rng(0), kinds=("screening", "practice"))
    engine.dispose()
    with pytest.raises(JudgmentsError, match=r"no answered main trials yet \(answered: practice: 2, screening: 1\)"):
        load_ab_judgments(fresh_ab)
    assert len(load_ab_judgments(fresh_ab, require_main=False)) == 3
    assert main(["preference", "--db", str(fresh_ab), "--experiment", "ab", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: sqlite:///") and "no answered main trials yet" in err


def test_only_excluded_workers_gives_a_report_that_says_so(fresh_ab, tmp_path):
    engine = create_engine(f"sqlite:///{fresh_ab}")
    fill_ab(engine, [clicker("c1"), ABWorker("deaf", headphone_passed=False)], np.random.default_rng(0))
    engine.dispose()
    a = write_preference_report(fresh_ab, tmp_path / "r", n_boot=100)
    assert a.pairs[0].pooled.n == 0 and math.isnan(a.pairs[0].pooled.share)
    assert any("no main judgments from included workers" in w for w in a.summary_lines())
    assert json.loads((tmp_path / "r" / "preference.json").read_text())["pairs"][0]["pooled"]["share"] is None
    assert "no main judgments from included workers" in (tmp_path / "r" / "index.html").read_text()


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_schema_url(pg_schema, tmp_path):
    """An upgraded schema with both experiments on the shared PostgreSQL server; (engine, URL) confined to it."""
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_URL

    options = {"options": f"-csearch_path={pg_schema}"}
    engine = create_engine(PG_URL, connect_args=options)
    try:
        build_databases(_app(PG_URL, connect_args=options), tmp_path)
        yield engine, make_url(PG_URL).update_query_dict(options).render_as_string(hide_password=False)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_gives_the_same_analysis_as_sqlite(pg_schema_url, fresh_ab):
    engine, url = pg_schema_url
    workers = GOOD[:6] + BAD
    fill_ab(engine, workers, np.random.default_rng(9))
    sqlite_engine = create_engine(f"sqlite:///{fresh_ab}")
    fill_ab(sqlite_engine, workers, np.random.default_rng(9))
    sqlite_engine.dispose()
    pg = load_ab_judgments(url, experiment="ab")
    lite = load_ab_judgments(fresh_ab, experiment="ab")
    assert pg.attrs["database_url"].startswith("postgresql")
    cols = [
        "worker",
        "kind",
        "item",
        "system_a",
        "system_b",
        "answer",
        "preferred",
        "is_correct",
        "skipped_playback",
        "screening_passed",
    ]
    pd.testing.assert_frame_equal(pg[cols], lite[cols])
    a_pg, a_lite = analyse_preferences(pg, n_boot=200), analyse_preferences(lite, n_boot=200)
    assert a_pg.pairs[0].describe() == a_lite.pairs[0].describe()
    assert list(a_pg.workers["excluded"]) == list(a_lite.workers["excluded"])
    with pytest.raises(JudgmentsError, match="is a same_different test"):
        load_ab_judgments(url, experiment="demo")

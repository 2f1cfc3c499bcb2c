"""Helpers for the analysis tests (a unique module name: other test folders have helpers too).

``build_template_db`` makes a listening-test database the way the app does
(Alembic ``upgrade`` on SQLite, then ``create_experiment`` from a tiny stimulus
set); ``fill_judgments`` inserts simulated workers' sessions, trials and
responses through the models' tables, with known observers:

- ``good``: P(different | level) = guess + (1 - guess - lapse) * logistic(slope * (level - threshold))
  with the family's threshold, on identical pairs P = guess;
- ``random``: answers at random (p = 0.5) and fast;
- ``same``: always answers "same".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, insert, select

from tests.manifests import ManifestWriter

SR = 16000
REFERENCES = ("ref_a", "ref_b")
FAMILIES = ("mp3", "noise")
LEVELS = tuple(float(v) for v in range(10, 101, 10))
THRESHOLDS = {"noise": 40.0, "mp3": 60.0}  # true JNDs in levels
SLOPE = 0.15  # per level
GUESS, LAPSE = 0.05, 0.02


def snr_db(level: float) -> float:
    return 40.0 - 0.4 * level


def bitrate_kbps(level: float) -> float:
    return 320.0 - 3.0 * level


def write_stimulus_set(folder: Path) -> Path:
    """Two references, two families, ten levels; 0.1 s clips whose added noise grows with level."""
    rng = np.random.default_rng(0)
    out = ManifestWriter(folder, SR)
    for ref in REFERENCES:
        clean = 0.1 * rng.standard_normal(SR // 10)
        out.add(ref, ref, "reference", 0, clean, {})
        for family in FAMILIES:
            for level in LEVELS:
                params = (
                    {"snr_db": snr_db(level), "noise_type": "white"}
                    if family == "noise"
                    else {"bitrate_kbps": bitrate_kbps(level), "bitrate_target_kbps": bitrate_kbps(level)}
                )
                out.add(
                    f"{ref}_{family}_{int(level)}",
                    ref,
                    family,
                    level,
                    clean + level / 1000 * rng.standard_normal(len(clean)),
                    params,
                )
    return out.write()


def build_template_db(folder: Path, with_experiment: bool = True) -> Path:
    """An Alembic-upgraded SQLite file (plus one experiment over the tiny stimulus set)."""
    from flask_migrate import upgrade

    from listening_test import create_app
    from listening_test.db import db
    from listening_test.manifest_import import create_experiment

    path = folder / "template.sqlite"
    app = create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}", "SECRET_KEY": "test-secret-key-0123456789"}
    )
    with app.app_context():
        upgrade()
        if with_experiment:
            manifest = write_stimulus_set(folder / "stimuli")
            create_experiment(
                db.session,
                manifest,
                procedure="staircase",
                name="demo",
                procedure_config={"max_trials": 4, "max_reversals": None},
                config={"references_per_participant": 1, "screening": {"tests": []}},
            )
            db.session.commit()
        db.engine.dispose()  # checkpoints the WAL into the main file before it is copied
    return path


@dataclass(frozen=True)
class Worker:
    worker_id: str
    kind: str = "good"  # good | random | same
    reps: int = 6  # main trials per level per family per reference
    n_identical: int = 10  # identical-pair catch trials per family
    n_obvious: int = 10  # obvious (top-rung) catch trials per family
    headphone_passed: bool | None = True
    rt_ms: float = 1500.0
    plays: int = 1
    threshold_shift: float = 0.0  # this worker's JND offset (levels)


def _p_different(worker: Worker, family: str, level: float | None) -> float:
    if worker.kind == "random":
        return 0.5
    if worker.kind == "same":
        return 0.0
    if level is None:  # identical pair
        return GUESS
    thr = THRESHOLDS[family] + worker.threshold_shift
    return GUESS + (1 - GUESS - LAPSE) / (1 + np.exp(-SLOPE * (level - thr)))


def insert_completed_session(
    conn,
    experiment_id: int,
    worker_id: str,
    seed: int,
    headphone_passed: bool | None,
    created_at: datetime,
    public_id: str | None = None,
) -> tuple[int, int]:
    """A Prolific participant, one completed session and (unless ``headphone_passed`` is None) its
    headphone-screen result; returns (participant id, session id)."""
    from listening_test.models import Participant, ScreeningResult, Session

    pid = conn.execute(
        insert(Participant).values(
            experiment_id=experiment_id, platform="prolific", platform_worker_id=worker_id, created_at=created_at
        )
    ).inserted_primary_key[0]
    sid = conn.execute(
        insert(Session).values(
            public_id=public_id or f"s-{worker_id}",
            experiment_id=experiment_id,
            participant_id=pid,
            platform_session_key=f"k-{worker_id}",
            stage="complete",
            seed=seed,
            schedule_state={},
            n_trials=0,
            screening_passed=headphone_passed,
            client_info={"ua": "test"},
            created_at=created_at,
        )
    ).inserted_primary_key[0]
    if headphone_passed is not None:
        conn.execute(
            insert(ScreeningResult).values(
                session_id=sid,
                test="huggins",
                n_trials=6,
                n_correct=6 if headphone_passed else 2,
                passed=headphone_passed,
                created_at=created_at,
            )
        )
    return pid, sid


def fill_judgments(
    db_path: Path,
    workers: list[Worker],
    rng: np.random.Generator,
    kinds: tuple[str, ...] = ("main", "catch_identical", "catch_obvious"),
) -> None:
    """Insert one completed session per worker with its trials and answers."""
    from listening_test.models import Experiment, Response, Session, Stimulus, Trial

    engine = create_engine(f"sqlite:///{db_path}")
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        exp_id = conn.execute(select(Experiment.id)).scalar_one()
        stim = {
            (r.reference, r.family, r.level): r.id
            for r in conn.execute(select(Stimulus.id, Stimulus.reference, Stimulus.family, Stimulus.level))
        }
        refs = {r: stim[(r, "reference", 0.0)] for r in REFERENCES}
        for w_index, w in enumerate(workers):
            _, sid = insert_completed_session(conn, exp_id, w.worker_id, w_index, w.headphone_passed, t0)
            plan = []
            for ref in REFERENCES:
                for family in FAMILIES:
                    if "main" in kinds:
                        plan += [("main", ref, family, lv) for lv in LEVELS for _ in range(w.reps)]
            for family in FAMILIES:
                if "catch_identical" in kinds:
                    plan += [("catch_identical", REFERENCES[i % 2], family, None) for i in range(w.n_identical)]
                if "catch_obvious" in kinds:
                    plan += [("catch_obvious", REFERENCES[i % 2], family, LEVELS[-1]) for i in range(w.n_obvious)]
            if "practice" in kinds:
                plan += [("practice", REFERENCES[0], FAMILIES[0], LEVELS[-1])]
            order = rng.permutation(len(plan))
            trials, answers = [], []
            for index, j in enumerate(order):
                kind, ref, family, level = plan[j]
                identical = level is None
                test_id = refs[ref] if identical else stim[(ref, family, level)]
                p = _p_different(w, family, level)
                answer = "different" if rng.random() < p else "same"
                expected = {"catch_identical": "same", "catch_obvious": "different", "practice": "different"}.get(kind)
                served = t0 + timedelta(hours=w_index, seconds=5 * index)
                trials.append(
                    dict(
                        session_id=sid,
                        trial_index=index,
                        kind=kind,
                        track_id=None,
                        reference_stimulus_id=refs[ref],
                        test_stimulus_id=test_id,
                        family=family,
                        level=0.0 if identical else level,
                        a_is_reference=bool(rng.integers(0, 2)),
                        spec={},
                        expected_answer=expected,
                        nonce=f"n{sid}-{index}",
                        answered=True,
                        served_at=served,
                    )
                )
                rt = w.rt_ms if w.kind != "random" else 150.0
                answers.append(
                    dict(
                        answer=answer,
                        is_correct=None if expected is None else answer == expected,
                        response_time_ms=int(rt * (0.8 + 0.4 * rng.random())),
                        play_counts=[w.plays, w.plays],
                        client_info={"focus_lost": 0},
                        created_at=served + timedelta(seconds=3),
                    )
                )
            # explicit ids so that trials and their answers go in as two batches
            next_id = (conn.execute(select(func.max(Trial.id))).scalar() or 0) + 1
            for offset, (t, a) in enumerate(zip(trials, answers)):
                t["id"] = next_id + offset
                a.update(trial_id=t["id"], session_id=sid, trial_index=t["trial_index"])
            conn.execute(insert(Trial), trials)
            conn.execute(insert(Response), answers)
            conn.execute(Session.__table__.update().where(Session.id == sid).values(n_trials=len(trials)))
    engine.dispose()


def save_untrained_metric(path: Path, trained_on: str = "simulated") -> Path:
    """A jndlab metric checkpoint of an untrained DPAMMetric (seed 0) at ``path``."""
    import torch

    from model.checkpoint import build_payload, save_checkpoint
    from model.network import DPAMMetric

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        metric = DPAMMetric()
    save_checkpoint(build_payload(metric, training_config={}, seed=0, metrics={}, trained_on=trained_on), path)
    return path

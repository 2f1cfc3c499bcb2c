"""``--judgments db``: the analysis package's reader and screening, trained_on read from the data.

The database is filled the way the pipeline fills it: the simulator drives a live server
(werkzeug, threaded, free port; SQLite built by ``alembic upgrade`` in tmp) over HTTP,
on a tiny stimulus set: 2 harmonic-tone references (0.5 s), white and brown noise at
4 levels from 45 dB SNR (inaudible) to 0 dB SNR (obvious, so good listeners pass the
catch trials).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from model.checkpoint import read_checkpoint
from model.data import judged_by, pairs_from_database
from perturbations.audio import save_audio
from tests.model.conftest import SR, add_noise, tone, train

FLOW = {
    "references_per_participant": 1,
    "families_per_participant": 2,
    "catch_rate": 0.4,
    "catch_obvious_share": 0.5,
    "practice_trials": 0,
    "screening": {"tests": ["antiphase"], "trials_per_test": 2, "min_correct": 2},
}
PROCEDURE = {"max_trials": 6, "max_reversals": None}


def write_manifest(folder) -> str:
    import csv
    import hashlib

    rng = np.random.default_rng(0)
    rows = []

    def add(stimulus_id, reference, family, level, params, audio):
        rel = f"audio/{stimulus_id}.wav"
        save_audio(folder / rel, audio, SR)
        rows.append(
            {
                "stimulus_id": stimulus_id,
                "reference": reference,
                "path": rel,
                "family": family,
                "level": level,
                "params": json.dumps(params),
                "seed": 0,
                "sample_rate": SR,
                "num_samples": len(audio),
                "sha256": hashlib.sha256((folder / rel).read_bytes()).hexdigest(),
            }
        )

    for r in range(2):
        ref = tone(r, 0.5)
        add(f"ref{r}", f"ref{r}", "reference", 0, {}, ref)
        for family, color in (("white", "white"), ("brown", "brown")):
            for level in (10, 40, 70, 100):
                snr = 50.0 - level / 2
                add(
                    f"ref{r}_{family}_{level}",
                    f"ref{r}",
                    family,
                    level,
                    {"snr_db": snr},
                    add_noise(ref, snr, rng, color),
                )
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def simulated_db(tmp_path_factory):
    """(database URL, {worker id: listener kind}) after a crowd of 6 (1 always-same, 1 without headphones)."""
    from flask_migrate import upgrade

    from listening_test.db import db
    from listening_test.manifest_import import create_experiment
    from listening_test.simulation.client import run_crowd, summarize
    from listening_test.simulation.population import make_population, parse_bad_workers
    from tests.listening_test.lt_helpers import live_server, make_app

    root = tmp_path_factory.mktemp("simdb")
    manifest = write_manifest(root)
    url = f"sqlite:///{root / 'jndlab.sqlite'}"
    app = make_app(url)
    with app.app_context():
        upgrade()
        create_experiment(
            db.session, manifest, procedure="staircase", name="sim", procedure_config=PROCEDURE, config=FLOW
        )
        db.session.commit()
    with live_server(app) as base_url:
        listeners = make_population(6, np.random.default_rng(4), parse_bad_workers("same=1,headphones=1", 6))
        crowd = run_crowd(base_url, "sim", listeners, concurrency=2)
        summary = summarize(crowd)
        assert not summary["fatal_errors"], summary["fatal_errors"]
    return url, {lst.worker_id: lst.kind for lst in listeners}


@pytest.mark.slow
def test_one_epoch_from_a_database_filled_by_the_simulator(simulated_db, tmp_path, capsys):
    url, kinds = simulated_db
    out = tmp_path / "run"
    assert train(url, out, "--epochs", "1", "--batch-size", "4", "--segment-s", "0.25") == 0
    printed = capsys.readouterr().out
    payload = read_checkpoint(out / "last.pt")
    assert payload["trained_on"] == "simulated" and "DEMO ONLY" in printed
    assert json.loads((out / "history.json").read_text())["trained_on"] == "simulated"
    # screening: the worker without headphones and the always-"same" clicker are named, with reasons
    # (a good listener's occasional lapse on 3-4 obvious catch trials may exclude it too:
    # the server draws the session seeds, so the catch schedule varies between runs)
    by_kind = {k: w for w, k in kinds.items()}
    assert "of 6 worker(s)" in printed, printed
    line_of = {w: next((ln for ln in printed.splitlines() if w in ln), "") for w in kinds}
    assert "failed the headphone screen" in line_of[by_kind["no_headphones"]]
    assert "obvious pairs called same" in line_of[by_kind["always_same"]]

    read = pairs_from_database(url)
    assert read.trained_on == "simulated" and len(read.pairs) > 10
    kept = {w.split(":", 1)[1] for w in read.pairs["participant"]}
    assert kept and kept <= {w for w, k in kinds.items() if k == "good"}
    assert set(read.excluded["worker_id"]) >= {by_kind["no_headphones"], by_kind["always_same"]}
    assert read.pairs["label"].isin([0, 1]).all() and read.pairs["reference"].str.startswith("sim:ref").all()
    assert all(pd.io.common.file_exists(p) for p in pd.concat([read.pairs["ref_audio"], read.pairs["test_audio"]]))


@pytest.mark.slow
def test_linear_regime_from_the_shipped_dpam_on_database_judgments(simulated_db, tmp_path, capsys):
    """DPAM's linear regime on a lab's judgments: 16 kHz clips resampled to the port's 22.05 kHz."""
    url, _ = simulated_db
    out = tmp_path / "run"
    assert (
        train(
            url,
            out,
            "--epochs",
            "1",
            "--init",
            "dpam",
            "--regime",
            "linear",
            "--batch-size",
            "4",
            "--segment-s",
            "0.25",
        )
        == 0
    )
    payload = read_checkpoint(out / "last.pt")
    assert payload["trained_on"] == "simulated" and payload["derived_from"]["variant"] == "scratch"
    assert payload["model_config"]["sample_rate"] == 22050
    assert "initialised from dpam" in capsys.readouterr().out


@pytest.mark.slow
def test_trained_on_that_contradicts_the_database_is_an_error(simulated_db, tmp_path, capsys):
    url, _ = simulated_db
    assert train(url, tmp_path / "run", "--trained-on", "human", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "--trained-on human contradicts the database" in err and "simulated" in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "marks, expected",
    [
        ([("sim", "sim"), ("sim", "")], "simulated"),  # the session's or the answer's mark counts
        ([("", ""), ("{}", '{"simulated": false}')], "human"),
        ([("sim", "sim"), ("", "")], "mixed"),
        ([], "unknown"),
    ],
)
def test_judged_by_reads_the_simulated_mark(marks, expected):
    sim = '{"simulated": true, "user_agent": "jndlab-simulator/1"}'
    rows = [
        {"client_info": sim if a == "sim" else a, "session_client_info": sim if s == "sim" else s} for a, s in marks
    ]
    assert judged_by(pd.DataFrame(rows, columns=["client_info", "session_client_info"])) == expected


def test_missing_database_is_a_one_line_error(tmp_path, capsys):
    assert train(f"sqlite:///{tmp_path / 'none.sqlite'}", tmp_path / "run") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.sqlite" in err

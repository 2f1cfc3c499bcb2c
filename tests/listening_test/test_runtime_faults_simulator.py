"""Issue 14, breaker finding 8: the simulator keeps its record when stopped by SIGTERM or
SIGINT: every acknowledged answer is in answers.jsonl as it is acknowledged, the summary
and truth are written, and the process exits promptly (a subprocess against a live server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from listening_test.db import db
from tests.listening_test.lt_helpers import ADMIN_TOKEN, CROWD_FLOW, live_server
from tests.listening_test.test_integrity import make  # noqa: F401 - the parametrized app fixture

REPO = Path(__file__).resolve().parents[2]
LONG = {"max_trials": 16, "max_reversals": None, "steps": [1], "shrink_at": [], "estimate_reversals": 2}


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_simulator_stopped_by_a_signal_keeps_every_acknowledged_answer(make, tmp_path, signum):  # noqa: F811
    app = make(procedure_config=LONG, flow=CROWD_FLOW)
    out = tmp_path / "sim"
    with live_server(app) as url:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "listening_test",
                "simulate",
                "--url",
                url,
                "--experiment",
                "demo",
                "--participants",
                "40",
                "--concurrency",
                "2",
                "--seed",
                "7",
                "--out-dir",
                str(out),
                "--admin-token",
                ADMIN_TOKEN,
                "--no-progress",
                "--reload-rate",
                "0",
                "--double-submit-rate",
                "0",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        try:
            deadline = time.monotonic() + 90
            while len(_lines(out / "answers.jsonl")) < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)  # answers reach the file as they are acknowledged, not at a participant's end
            assert proc.poll() is None, proc.communicate()[0]
            assert len(_lines(out / "answers.jsonl")) >= 6
            proc.send_signal(signum)
            began = time.monotonic()
            output, _ = proc.communicate(timeout=30)
            stopped_s = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 128 + signum, output
        assert stopped_s < 15, f"took {stopped_s:.1f} s to stop"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] == signal.Signals(signum).name
        assert summary["participants_not_started"] > 0 and not summary["fatal_errors"]
        truth = json.loads((out / "truth.json").read_text())
        assert len(truth["listeners"]) == 40
        recorded = {(a["trial_id"]) for a in _lines(out / "answers.jsonl") if not a["duplicate"]}
        with app.app_context():
            stored = set(db.session.execute(text("SELECT trial_id FROM responses")).scalars())
        assert recorded == stored  # nothing the server holds is missing from the record, nothing extra
        assert summary["answers_acknowledged"] == len(recorded)


def test_a_crowd_from_one_address_waits_out_the_landing_limit(make, tmp_path, monkeypatch):  # noqa: F811
    """A 429 is the server's "come back in Retry-After s", not a fault: a simulated crowd
    (one address) over the landing limit waits the whole Retry-After, however long next to
    the patience for faults, and finishes with no fatal error. CI hit this when two crowds
    ran within one minute in one process: 429 ended participants."""
    from listening_test.simulation import client
    from listening_test.simulation.runner import simulate

    monkeypatch.setattr(client, "PATIENCE_S", 1.0)  # far below the 12 s window: 429 waits must not use it
    app = make(procedure_config={"max_trials": 3, "max_reversals": None}, flow=CROWD_FLOW)
    with live_server(app, landing_rate_limit="2 per 12 second") as url:
        summary = simulate(
            url=url,
            slug="demo",
            participants=3,
            concurrency=3,
            out_dir=tmp_path / "sim",
            progress=False,
            echo=lambda *_: None,
        )
    assert summary["http_status"].get("429", 0) > 0, summary["http_status"]
    assert not summary["fatal_errors"], summary["fatal_errors"]
    assert summary["unfinished"] == 0
    with app.app_context():
        assert db.session.execute(text("SELECT COUNT(*) FROM sessions")).scalar_one() == 3


def test_local_servers_lift_the_per_address_landing_limit(make):  # noqa: F811
    """Every participant of a local (dry-run) server is 127.0.0.1; its landing limit is lifted
    unless the caller keeps the app's own (None)."""
    app = make()
    app.config["LANDING_RATE_LIMIT"] = "5 per minute"
    with live_server(app, landing_rate_limit=None):
        assert app.config["LANDING_RATE_LIMIT"] == "5 per minute"
    with live_server(app):
        assert app.config["LANDING_RATE_LIMIT"] == "100000 per minute"

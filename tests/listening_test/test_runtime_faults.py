"""Issue 14, runtime faults found by the reviewer (notes: breaker14 findings 5, 7, 9, 12, 13, 14):
each test covers a kind, on SQLite and PostgreSQL where a database is involved."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from listening_test.db import db
from listening_test.models import Trial
from tests.listening_test.lt_helpers import ADMIN_TOKEN, Participant
from tests.listening_test.test_integrity import make  # noqa: F401 - the parametrized app fixture

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# one-rung steps: valid on the small test ladder whatever the defaults
PROCEDURE = {"max_trials": 12, "max_reversals": None, "steps": [1], "shrink_at": [], "estimate_reversals": 2}


def _fetch(client, url, token):
    return client.get(url, headers={"X-Session-Token": token})


def _copied_set(tmp_path: Path, manifest_path: Path) -> Path:
    folder = tmp_path / "set"
    shutil.copytree(manifest_path.parent, folder)
    return folder / manifest_path.name


def _main_trial_file(make, tmp_path, manifest_path):  # noqa: F811
    manifest = _copied_set(tmp_path, manifest_path)
    app = make(manifest=manifest, procedure_config=PROCEDURE)
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    trial = p.state["trial"]
    with app.app_context():
        victim = manifest.parent / db.session.get(Trial, trial["id"]).test_stimulus.path
    return app, p, trial, victim


# --- 5: a file changed after creation is a clip fault -------------------------------------

@pytest.mark.parametrize("change", ["truncated", "resampled", "longer"])
def test_changed_file_is_a_clip_fault_not_delivered(make, tmp_path, manifest_path, change):  # noqa: F811
    app, p, trial, victim = _main_trial_file(make, tmp_path, manifest_path)
    body = {"trial_id": trial["id"], "nonce": trial["nonce"]}
    assert p.post("/api/session/clip-fault", body).status_code == 409  # intact: clips_ok
    audio, rate = sf.read(victim, dtype="float64")
    if change == "truncated":
        victim.write_bytes(victim.read_bytes()[:len(victim.read_bytes()) // 2])  # the header still decodes
    elif change == "resampled":
        sf.write(victim, audio, rate // 2)
    else:
        sf.write(victim, np.concatenate([audio, audio[:100]]), rate)
    codes = [_fetch(p.client, c["url"], p.token).status_code for c in trial["clips"]]
    assert 410 in codes and set(codes) <= {200, 410}
    r = p.post("/api/session/clip-fault", body)
    assert r.status_code == 200 and r.get_json()["voided"] is True
    reason = r.get_json()["reason"]
    assert str(victim) in reason and ("samples" in reason or "Hz" in reason)

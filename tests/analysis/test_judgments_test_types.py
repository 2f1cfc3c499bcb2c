"""Same/different analysis reads only same/different experiments; an A/B one is named as such."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.judgments import JudgmentsError, load_judgments
from tests.analysis.an_helpers import Worker, build_template_db, fill_judgments
from tests.listening_test.lt_helpers import AB_FLOW_CONFIG, write_ab_set


@pytest.fixture
def mixed_db(tmp_path):
    """The same/different 'demo' experiment with judgments, plus an A/B experiment 'ab'."""
    from listening_test import create_app
    from listening_test.db import db
    from listening_test.manifest_import import create_experiment

    path = build_template_db(tmp_path)
    fill_judgments(path, [Worker("W1", "good")], np.random.default_rng(0))
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"})
    with app.app_context():
        create_experiment(
            db.session, write_ab_set(tmp_path / "ab"), name="ab", test_type="ab_preference", config=AB_FLOW_CONFIG
        )
        db.session.commit()
        db.engine.dispose()
    return path


def test_an_ab_experiment_is_refused_by_name_and_left_out_otherwise(mixed_db):
    with pytest.raises(JudgmentsError, match="'ab' is an A/B preference test.*analysis preference"):
        load_judgments(f"sqlite:///{mixed_db}", experiment="ab")
    everything = load_judgments(f"sqlite:///{mixed_db}")
    assert set(everything["experiment"]) == {"demo"}
    assert len(everything) == len(load_judgments(f"sqlite:///{mixed_db}", experiment="demo"))

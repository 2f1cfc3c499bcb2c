"""Fixtures: an Alembic-upgraded SQLite database with a tiny stimulus set, filled with
simulated workers of known quality (see an_helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.analysis.an_helpers import Worker, build_template_db, fill_judgments

GOOD = [Worker(f"good{i}", threshold_shift=float(s)) for i, s in enumerate([-6, -3, -1, 0, 0, 1, 3, 6])]
BAD = [
    Worker("clicker", kind="random", headphone_passed=None),
    Worker("sayssame", kind="same"),
    Worker("noheadphones", headphone_passed=False),
]


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("analysis_db")
    build_template_db(folder)
    return folder


@pytest.fixture(scope="session")
def filled_db(template_dir, tmp_path_factory) -> str:
    """Session-wide database with 8 good workers and 3 bad ones; tests must only read it."""
    path = tmp_path_factory.mktemp("filled") / "jndlab.sqlite"
    shutil.copy(template_dir / "template.sqlite", path)
    fill_judgments(path, GOOD + BAD, np.random.default_rng(1))
    return f"sqlite:///{path}"


@pytest.fixture
def fresh_db(template_dir, tmp_path) -> Path:
    """A copy of the template (experiment, no judgments) for a test to fill."""
    path = tmp_path / "jndlab.sqlite"
    shutil.copy(template_dir / "template.sqlite", path)
    return path

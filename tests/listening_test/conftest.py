"""Fixtures: a tiny stimulus set + manifest, an app whose database is built by
``alembic upgrade`` (never create_all), its test client and CLI runner.

The upgrade runs once per test session into a template SQLite file; each test
gets a copy, which keeps the suite fast on a 2-core machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from flask_migrate import upgrade

from listening_test.db import db
from listening_test.manifest_import import create_experiment
from tests.listening_test.lt_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FLOW_CONFIG,
    PROCEDURE_CONFIG,
    make_app,
    write_stimulus_set,
)


@pytest.fixture(scope="session")
def manifest_path(tmp_path_factory) -> Path:
    return write_stimulus_set(tmp_path_factory.mktemp("stimuli"))


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    app = make_app(f"sqlite:///{path}")
    with app.app_context():
        upgrade()
        db.engine.dispose()  # checkpoints the WAL into the main file before it is copied
    return path


@pytest.fixture
def app(tmp_path, template_db, manifest_path):
    path = tmp_path / "jndlab.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}")
    with app.app_context():
        create_experiment(
            db.session,
            manifest_path,
            procedure="staircase",
            name="demo",
            procedure_config=PROCEDURE_CONFIG,
            config=FLOW_CONFIG,
            target_judgments=100,
            prolific_completion_code="PROLIFIC123",
        )
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def browser():
    """Headless Chromium (Playwright); skipped without /usr/bin/chromium, except under CI=true."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; the browser end-to-end tests must run in CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser test skipped")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

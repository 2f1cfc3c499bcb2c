"""Fixtures: a tiny stimulus set + manifest, an app whose database is built by
``alembic upgrade`` (never create_all), its test client and CLI runner.

The upgrade runs once per test session into a template SQLite file; each test
gets a copy, which keeps the suite fast on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from flask_migrate import upgrade

from listening_test.db import db
from tests.listening_test.lt_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    add_demo_experiment,
    live_server,
    make_app,
    participant_at,
    template_copy_app,
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
    app = template_copy_app(template_db, tmp_path / "jndlab.sqlite")
    with app.app_context():
        add_demo_experiment(manifest_path, target_judgments=100, prolific_completion_code="PROLIFIC123")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def serve_demo(tmp_path, template_db, manifest_path):
    """serve_demo(config, procedure_config, set_fields=None, **create_kwargs) -> (app, base_url):
    the experiment "demo" (``add_demo_experiment``; then each of ``set_fields`` set on it and
    committed) on its own copy of the template database, behind a live server on a free port
    (stopped at the test's end)."""
    started = []

    def start(config, procedure_config, set_fields=None, **kwargs):
        app = template_copy_app(template_db, tmp_path / f"served{len(started)}.sqlite")
        with app.app_context():
            experiment = add_demo_experiment(manifest_path, procedure_config, config, **kwargs)
            for key, value in (set_fields or {}).items():
                setattr(experiment, key, value)
            db.session.commit()
        started.append(app)
        return app, stack.enter_context(live_server(app))

    with contextlib.ExitStack() as stack:
        yield start


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def in_main(app, client):
    """A ``Participant`` on ``client`` that has walked to the first main trial of ``app``'s "demo"."""
    return participant_at(app, "main", client)


@pytest.fixture
def browser():
    """Headless Chromium (Playwright); skipped without /usr/bin/chromium, except under CI=true."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; the browser end-to-end tests must run in CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser test skipped")
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait as long as actions (E2EPage's TIMEOUT_MS), not Playwright's 5 s: a
    # "played ✓" needs the clip (up to ~3.7 s of demo speech) played in real time, which on a
    # loaded 2-core machine leaves 5 s too little slack.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

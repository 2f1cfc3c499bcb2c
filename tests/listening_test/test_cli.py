"""CLI: db upgrade, experiment create/list, serve (via app.test_cli_runner())."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from listening_test.config import ConfigError, default_database_url, load_config
from listening_test.db import db
from tests.listening_test.lt_helpers import cli_create, make_app, row_counts

REPO = Path(__file__).resolve().parents[2]


def test_db_upgrade_then_experiment_create(tmp_path, manifest_path):
    app = make_app(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert "responses" in inspect(db.engine).get_table_names()
    result = cli_create(
        runner,
        str(manifest_path),
        "--procedure",
        "binary_search",
        "--name",
        "cli-study",
        "--config",
        '{"catch_rate": 0.1}',
    )
    assert result.exit_code == 0, result.output
    assert "cli-study" in result.output and "/e/cli-study" in result.output
    assert row_counts(app)["stimuli"] == 18
    listed = runner.invoke(args=["experiment", "list"])
    assert "cli-study\tdraft\tbinary_search" in listed.output  # a new experiment is a draft


def test_experiment_create_errors_create_nothing(runner, app, tmp_path, manifest_path):
    before = row_counts(app)
    bad = cli_create(runner, str(tmp_path / "missing.csv"), "--procedure", "staircase")
    assert bad.exit_code != 0 and "manifest not found" in bad.output
    bad_json = cli_create(runner, str(manifest_path), "--procedure", "staircase", "--procedure-config", "{oops")
    assert bad_json.exit_code != 0 and "not JSON" in bad_json.output
    bad_proc = cli_create(runner, str(manifest_path), "--procedure", "quest")
    assert bad_proc.exit_code != 0
    bad_opt = cli_create(
        runner, str(manifest_path), "--procedure", "staircase", "--name", "x", "--procedure-config", '{"n_down": 0}'
    )
    assert bad_opt.exit_code != 0 and "n_down" in bad_opt.output
    assert row_counts(app) == before


def test_serve_prints_gunicorn_command(runner):
    result = runner.invoke(args=["serve", "--port", "5123", "--workers", "3", "--print-command"])
    assert result.exit_code == 0, result.output
    assert "gunicorn" in result.output and "127.0.0.1:5123" in result.output
    assert "--workers 3" in result.output and "listening_test:create_app()" in result.output


def _python_m(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m listening_test ARGS`` with a valid secret and an in-memory database, plus ``env``."""
    env = {**os.environ, "SECRET_KEY": "x" * 32, "DATABASE_URL": "sqlite:///:memory:", **env}
    return subprocess.run(
        [sys.executable, "-m", "listening_test", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_python_m_entry_point_help():
    out = _python_m("--help")
    assert out.returncode == 0, out.stderr
    for command in ("db", "experiment", "serve"):
        assert command in out.stdout


def test_a_bad_setting_stops_the_cli_with_one_line():
    out = _python_m("serve", "--print-command", DATABASE_POOL_SIZE="lots")
    assert out.returncode != 0
    assert "DATABASE_POOL_SIZE='lots' is not an integer" in out.stderr
    assert "Traceback" not in out.stderr


def test_refuses_to_start_without_secret(monkeypatch):
    import pytest

    from listening_test import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})
    with pytest.raises(ConfigError, match="too short"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "SECRET_KEY": "short"})


def test_config_from_environment(tmp_path):
    cfg = load_config(
        {
            "DATABASE_URL": "postgresql+psycopg://u@h/db",
            "SECRET_KEY": "k" * 20,
            "ADMIN_TOKEN": "t",
            "MAX_CONTENT_LENGTH": "1000",
        }
    )
    assert cfg["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@h/db"
    assert cfg["MAX_CONTENT_LENGTH"] == 1000 and cfg["ADMIN_TOKEN"] == "t"
    assert load_config({})["SECRET_KEY"] is None
    assert load_config({"DATABASE_POOL_SIZE": " 24 "})["DATABASE_POOL_SIZE"] == 24
    assert default_database_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'instance' / 'jndlab.sqlite'}"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_POOL_SIZE", "many", "not an integer"),
        ("DATABASE_POOL_SIZE", "0", "below its minimum 1"),
        ("MAX_CONTENT_LENGTH", "1e6", "not an integer"),
        ("TRUSTED_PROXY_COUNT", "-1", "below its minimum 0"),
        ("SESSION_MAX_AGE_S", "5", "below its minimum 60"),
        ("SESSION_MAX_AGE_S", str(10**12), "above its maximum 315360000"),
        ("AUDIO_MAX_AGE_S", str(10**12), "above its maximum 315360000"),
    ],
)
def test_a_bad_integer_setting_is_named(name, value, message):
    with pytest.raises(ConfigError, match=f"{name}=.*{message}"):
        load_config({name: value})


def test_the_longest_max_ages_still_make_valid_expiry_dates():
    """At MAX_AGE_CEILING_S the participant cookie and a clip still get an Expires date
    (at 10**12 s building it raised ValueError in every landing and every clip: 500)."""
    import io

    from flask import Flask, send_file
    from werkzeug.http import dump_cookie

    from listening_test.config import MAX_AGE_CEILING_S

    cfg = load_config({"SESSION_MAX_AGE_S": str(MAX_AGE_CEILING_S), "AUDIO_MAX_AGE_S": str(MAX_AGE_CEILING_S)})
    assert cfg["SESSION_MAX_AGE_S"] == cfg["AUDIO_MAX_AGE_S"] == MAX_AGE_CEILING_S
    assert f"Max-Age={MAX_AGE_CEILING_S}" in dump_cookie("c", "v", max_age=MAX_AGE_CEILING_S)
    with Flask("clip").test_request_context():
        response = send_file(io.BytesIO(b"RIFF"), mimetype="audio/wav", max_age=MAX_AGE_CEILING_S)
        assert response.headers["Expires"]

"""Commands that serve nothing run without SECRET_KEY; the ones that serve refuse without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

REPO = Path(__file__).resolve().parents[2]


def _env_without_secret(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ADMIN_TOKEN"}}
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "listening_test", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_help_needs_no_secret(tmp_path):
    out = _run(["--help"], _env_without_secret(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite'}"))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    for command in ("db", "experiment", "serve", "demo", "simulate"):
        assert command in out.stdout


def test_db_upgrade_and_experiment_create_need_no_secret(tmp_path, manifest_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    env = _env_without_secret(DATABASE_URL=url)
    out = _run(["db", "upgrade"], env)
    assert out.returncode == 0, out.stderr
    assert "responses" in inspect(create_engine(url)).get_table_names()
    out = _run(["experiment", "create", "--manifest", str(manifest_path), "--name", "no-secret"], env)
    assert out.returncode == 0, out.stderr
    assert "/e/no-secret" in out.stdout


def test_flask_cli_db_upgrade_needs_no_secret(tmp_path):
    url = f"sqlite:///{tmp_path / 'flask.sqlite'}"
    flask = Path(sys.executable).with_name("flask")
    out = subprocess.run(
        [str(flask), "--app", "listening_test", "db", "upgrade"],
        cwd=REPO,
        env=_env_without_secret(DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "responses" in inspect(create_engine(url)).get_table_names()


def test_serve_refuses_without_secret(tmp_path):
    env = _env_without_secret(DATABASE_URL=f"sqlite:///{tmp_path / 's.sqlite'}")
    for args in (["serve", "--print-command"], ["serve", "--dev", "--port", "5999"]):
        out = _run(args, env)
        assert out.returncode != 0
        assert "SECRET_KEY is not set" in out.stderr and "Traceback" not in out.stderr


def test_wsgi_entry_point_refuses_without_secret(monkeypatch):
    # gunicorn builds the app with `listening_test:create_app()`, outside any command.
    from listening_test import create_app
    from listening_test.config import ConfigError

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"})


def test_app_built_by_a_command_answers_503_without_secret(monkeypatch):
    from listening_test import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:"}, serving=False)
    response = app.test_client().get("/e/anything")
    assert response.status_code == 503
    assert response.get_json()["error"] == "server_misconfigured"

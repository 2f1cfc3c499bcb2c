"""``python -m listening_test demo`` with a tiny stimulus set: secrets, upgrade, idempotent create."""

from __future__ import annotations

import os
import stat

from click.testing import CliRunner
from sqlalchemy import create_engine, text

from listening_test.cli import demo
from listening_test.cli.demo import demo_command


def _run(tmp_path, manifest_path, monkeypatch):
    args = [
        "--manifest",
        str(manifest_path),
        "--env-file",
        str(tmp_path / "instance" / "demo.env"),
        "--port",
        "5055",
        "--no-serve",
    ]
    return CliRunner().invoke(demo_command, args, catch_exceptions=False)


def test_demo_sets_up_once(tmp_path, manifest_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ADMIN_TOKEN", "ADMIN_PASSWORD_HASH")}
    db_path = tmp_path / "demo.sqlite"
    env["DATABASE_URL"] = f"sqlite:///{db_path}"
    monkeypatch.setattr(os, "environ", env)  # the command writes the secrets into os.environ

    first = _run(tmp_path, manifest_path, monkeypatch)
    assert first.exit_code == 0, first.output
    assert "created experiment 'demo'" in first.output
    assert "participant URL: http://127.0.0.1:5055/e/demo" in first.output
    assert "admin dashboard: http://127.0.0.1:5055/admin/e/demo" in first.output
    env_file = tmp_path / "instance" / "demo.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    saved = demo.read_env_file(env_file)
    assert len(saved["SECRET_KEY"]) >= 32 and len(saved["ADMIN_TOKEN"]) >= 32
    assert f"#token={saved['ADMIN_TOKEN']}" in first.output

    # Again, from a fresh environment: the same secrets, no second experiment.
    for key in ("SECRET_KEY", "ADMIN_TOKEN"):
        env.pop(key)
    second = _run(tmp_path, manifest_path, monkeypatch)
    assert second.exit_code == 0, second.output
    assert "exists; reusing it" in second.output
    assert demo.read_env_file(env_file) == saved
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM experiments WHERE slug = 'demo'")).scalar_one() == 1
        assert conn.execute(text("SELECT COUNT(*) FROM stimuli")).scalar_one() > 0
    engine.dispose()


def test_demo_without_stimuli_says_how(tmp_path):
    result = CliRunner().invoke(demo_command, ["--manifest", str(tmp_path / "missing.csv"), "--no-serve"])
    assert result.exit_code != 0
    assert "python -m perturbations generate" in result.output


def test_demo_is_a_top_level_command():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "listening_test", "demo", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "SECRET_KEY": ""},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "--no-serve" in out.stdout


def test_demo_leaves_the_database_free_for_serving(tmp_path, manifest_path, monkeypatch):
    # `demo` hands over to `serve`, which opens the database again: nothing the demo read may
    # still hold a transaction (on SQLite that holds jndlab's write queue: "database is locked").
    import click
    from flask import current_app

    from listening_test.cli import serve
    from listening_test.cli.database import database_problem

    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "ADMIN_TOKEN", "ADMIN_PASSWORD_HASH")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite'}"
    monkeypatch.setattr(os, "environ", env)

    @click.command()
    @click.option("--host")
    @click.option("--port", type=int)
    @click.option("--workers", type=int)
    @click.option("--threads", type=int)
    @click.option("--dev", is_flag=True)
    @click.option("--print-command", is_flag=True)
    def fake_serve(**_):
        problem = database_problem(current_app)  # what the real serve checks first
        click.echo(f"serve check: {problem or 'ok'}")

    monkeypatch.setattr(serve, "serve_command", fake_serve)
    args = ["--manifest", str(manifest_path), "--env-file", str(tmp_path / "instance" / "demo.env"), "--port", "5056"]
    for run in ("creates", "reuses"):
        result = CliRunner().invoke(demo_command, args, catch_exceptions=False)
        assert result.exit_code == 0, (run, result.output)
        assert "serve check: ok" in result.output, (run, result.output)

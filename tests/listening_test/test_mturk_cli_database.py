"""``python -m listening_test mturk ...`` refuses a missing or unmigrated database in one line
naming it (the check ``experiment`` commands have, ``cli.needs_database``), and creates no file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COMMANDS = {
    "export-workers": ["mturk", "export-workers", "--experiment", "demo"],
    "question-xml": ["mturk", "question-xml", "--experiment", "demo", "--url", "https://study.example.org"],
    "create-hits": [
        "mturk",
        "create-hits",
        "--experiment",
        "demo",
        "--url",
        "https://study.example.org",
        "--assignments",
        "3",
        "--reward",
        "1.00",
        "--dry-run",
    ],
}


def _run(args, cwd, **extra):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ADMIN_TOKEN", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "listening_test", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_mturk_commands_refuse_a_missing_database_without_creating_it(tmp_path, name):
    out = _run(COMMANDS[name], tmp_path)
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"Error: no database at {tmp_path.resolve() / 'instance' / 'jndlab.sqlite'}")
    assert "db upgrade" in lines[0]
    assert not (tmp_path / "instance" / "jndlab.sqlite").exists()


@pytest.mark.parametrize("name", ["export-workers", "create-hits"])
def test_mturk_commands_refuse_an_unmigrated_database(tmp_path, name):
    db_path = tmp_path / "empty.sqlite"
    sqlite3.connect(db_path).close()
    out = _run(COMMANDS[name], tmp_path, DATABASE_URL=f"sqlite:///{db_path}")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "is empty (not migrated)" in out.stderr and str(db_path) in out.stderr
    assert "no such table" not in out.stderr

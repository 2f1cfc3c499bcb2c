"""The command line for a real study: one clear line for a missing or unmigrated database
(and no empty file left behind), ``-e ENV_FILE``, ``serve --dev`` that really serves,
``experiment launch`` / ``status``."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "cli-study-secret-0123456789"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ADMIN_TOKEN", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _run(args, env, cwd):
    return subprocess.run(
        [sys.executable, "-m", "listening_test", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_missing_database_is_refused_in_one_line_without_creating_it(tmp_path):
    out = _run(["experiment", "list"], _env(), cwd=tmp_path)  # the default: instance/jndlab.sqlite here
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"Error: no database at {tmp_path.resolve() / 'instance' / 'jndlab.sqlite'}")
    assert "db upgrade" in lines[0]
    assert not (tmp_path / "instance" / "jndlab.sqlite").exists()


def test_unmigrated_database_is_refused(tmp_path, manifest_path):
    db_path = tmp_path / "empty.sqlite"
    sqlite3.connect(db_path).close()
    env = _env(DATABASE_URL=f"sqlite:///{db_path}")
    out = _run(["experiment", "create", "--manifest", str(manifest_path)], env, cwd=tmp_path)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "is empty (not migrated)" in out.stderr and str(db_path) in out.stderr


def test_env_file_then_create_launch_and_close(tmp_path, manifest_path):
    env_file = tmp_path / "study.env"
    env_file.write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'study.sqlite'}\nSECRET_KEY={SECRET}\n")
    env = _env()
    assert _run(["-e", str(env_file), "db", "upgrade"], env, cwd=tmp_path).returncode == 0
    out = _run(
        [
            "-e",
            str(env_file),
            "experiment",
            "create",
            "--manifest",
            str(manifest_path),
            "--name",
            "s1",
            "--procedure",
            "staircase",
            "--target-participants",
            "20",
            "--description",
            "A short study.",
        ],
        env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "status: draft" in out.stdout
    out = _run(["-e", str(env_file), "experiment", "status", "s1", "active"], env, cwd=tmp_path)
    assert out.returncode == 1 and "launch it" in out.stderr
    out = _run(["-e", str(env_file), "experiment", "launch", "s1"], env, cwd=tmp_path)
    assert out.returncode == 0 and "0 test session(s) deleted" in out.stdout
    out = _run(["-e", str(env_file), "experiment", "status", "s1", "closed"], env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "s1: closed"
    out = _run(["-e", str(env_file), "experiment", "estimate", "s1"], env, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("s1: about ") and "staircase procedure" in out.stdout
    listed = _run(["-e", str(env_file), "experiment", "list"], env, cwd=tmp_path).stdout
    assert listed.startswith("s1\tclosed\tstaircase\ts1\tcomplete=")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_dev_really_serves(tmp_path, manifest_path):
    url = f"sqlite:///{tmp_path / 'dev.sqlite'}"
    env = _env(DATABASE_URL=url, SECRET_KEY=SECRET)
    assert _run(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    assert (
        _run(
            ["experiment", "create", "--manifest", str(manifest_path), "--name", "dev", "--procedure", "staircase"],
            env,
            cwd=tmp_path,
        ).returncode
        == 0
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "listening_test", "serve", "--dev", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/e/dev", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(0.3)
        assert proc.poll() is None, "serve --dev returned instead of serving"
        assert body is not None and "Test mode" in body and 'data-slug="dev"' in body
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # reads and closes the pipe

"""Fixtures shared by every package's tests. Keep them small and generic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog while seven pilots watch quietly."


def python_output(code: str) -> str:
    """Runs ``python -c CODE`` in a fresh interpreter from the repository root (what a module
    imports, seen from outside this test process); returns its stdout, stripped.

    Raises:
        subprocess.CalledProcessError: the code exited non-zero.
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return done.stdout.strip()


def python_ok(args: list[str], cwd, **env: str) -> str:
    """Runs ``python ARGS`` (this interpreter) in ``cwd`` with the environment plus ``env``,
    the repository on PYTHONPATH, for at most 300 s; asserts it exits 0 (the message: the
    end of its stderr). Returns its stdout.

    Raises:
        subprocess.TimeoutExpired: it ran past 300 s.
    """
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="session")
def sample_rate() -> int:
    return 16000


@pytest.fixture(scope="session")
def speech_16k(tmp_path_factory) -> np.ndarray:
    """About 3 s of deterministic synthetic speech: float32, mono, 16 kHz, -23 LUFS, trimmed."""
    from perturbations.audio import resample
    from perturbations.loudness import normalize_loudness

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(wav), SPEECH_TEXT], check=True, capture_output=True
    )
    audio, rate = sf.read(str(wav), dtype="float64")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != 16000:  # espeak-ng writes 22050 Hz
        audio = resample(audio, rate, 16000, dtype=np.float64)
    # trim leading/trailing silence (-50 dB below the peak), keep at most 3 s
    voiced = np.flatnonzero(np.abs(audio) > np.abs(audio).max() * 10 ** (-50 / 20))
    audio = audio[voiced[0] : voiced[-1] + 1][: 3 * 16000]
    return normalize_loudness(audio.astype(np.float32), 16000, -23.0)


# PostgreSQL: the server the CI machines run (trust auth); tests isolate by schema.
PG_URL = os.environ.get("JNDLAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_schema():
    """A uniquely named schema on the shared PostgreSQL server, dropped afterwards.

    Skips when the server is unreachable, except under ``CI=true``, where it fails: CI
    must test the database layer on PostgreSQL.
    """
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure to reach the server
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable at {PG_URL} in CI: {error}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {error.__class__.__name__}")
    schema = f"jndlab_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- torch-based packages (model, se): their folders' conftests use these ----------------------
@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: 2 shared cores, so timings and results stay steady."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tone(seed: int, seconds: float = 0.5, sample_rate: int = 16000) -> np.ndarray:
    """A harmonic, amplitude-modulated tone: speech-like enough, and quick to make.

    float32, shape ``(round(seconds * sample_rate),)``, peak below 0.2; f0 100-250 Hz and
    7 harmonics with phases from ``default_rng(seed)``, 2-5 Hz amplitude modulation.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(100, 250)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    x *= 1 + 0.6 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    return (0.05 * x).astype(np.float32)

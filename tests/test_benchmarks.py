"""Every benchmark in benchmarks/ runs its smoke mode, so that none can rot.

Each benchmark must accept ``--quick``: a short run that needs no network, no pre-existing
database and no earlier output, and exits 0. The numbers are not checked here (timings belong to
the benchmarks themselves); a benchmark that crashes, or that lost its ``--quick``, fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
SMOKE_TIMEOUT_S = 600


def test_there_are_benchmarks():
    assert BENCHMARKS


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_has_quick_mode(name):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"benchmarks/{name} --help failed:\n{out.stderr[-3000:]}"
    assert "--quick" in out.stdout, f"benchmarks/{name} has no --quick smoke mode"


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_quick_run(name, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "JNDLAB_BENCH_TMP": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
    )
    assert out.returncode == 0, (
        f"benchmarks/{name} --quick exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    )

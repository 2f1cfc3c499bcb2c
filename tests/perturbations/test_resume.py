"""Resume after SIGKILL: same result as an uninterrupted run, no half-written files, no redone clips."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from perturbations.generate import GenerateConfig, generate
from perturbations.generate.journal import JOURNAL_NAME

FAMILIES = ("clipping", "lowpass", "mulaw")
NUM_LEVELS = 11
TOTAL = 2 * (1 + len(FAMILIES) * NUM_LEVELS)


def _clip(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    audio = 0.2 * np.sin(2 * np.pi * (150 + 30 * seed) * t) * (1 - np.cos(2 * np.pi * 3 * t)) / 2
    sf.write(str(path), (audio + 0.002 * rng.standard_normal(len(t))).astype(np.float32), 16000, subtype="PCM_16")


# The runs to be killed journal at most one clip per THROTTLE_S (a sleep after each journal
# line, patched in the child; the code under test is unchanged): the test's poll must see the
# count reached before the run finishes on its own, however late a loaded machine schedules
# the test (unthrottled, the clips after the kill point took 0.1 s here; throttled, 1.7 s).
THROTTLE_S = 0.03


def _command(root: Path, out: Path, throttle_s: float = 0.0) -> list[str]:
    start = ["-m", "perturbations"]
    if throttle_s:
        start = [
            "-c",
            "import runpy, sys, time\n"
            "from perturbations.generate import journal\n"
            "add = journal.Journal.add\n"
            "def slow_add(self, key, row):\n"
            "    add(self, key, row)\n"
            f"    time.sleep({throttle_s!r})\n"
            "journal.Journal.add = slow_add\n"
            "sys.argv[0] = 'perturbations'\n"
            "runpy.run_module('perturbations', run_name='__main__', alter_sys=True)\n",
        ]
    return [
        sys.executable,
        *start,
        "generate",
        "--input",
        str(root),
        "--output",
        str(out),
        "--families",
        ",".join(FAMILIES),
        "--levels",
        str(NUM_LEVELS),
        "--seed",
        "3",
        "--no-progress",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "JNDLAB_CODE_VERSION": "test"}  # git describe may change while tests run


def _journal_keys(out: Path) -> list[dict]:
    path = out / JOURNAL_NAME
    if not path.exists():
        return []
    entries = []
    for line in path.read_bytes().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            pass  # the torn last line of a killed append
    return entries


def _run_and_kill(root: Path, out: Path, after_lines: int) -> list[dict]:
    """Start the CLI, SIGKILL it once the journal holds ``after_lines`` finished clips."""
    process = subprocess.Popen(
        _command(root, out, THROTTLE_S), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while len(_journal_keys(out)) < after_lines:
            assert process.poll() is None, f"run ended before the kill: {process.stderr.read().decode()}"
            assert time.monotonic() < deadline, "run made no progress"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return _journal_keys(out)


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    for i in range(2):
        _clip(root / f"clip{i}.wav", i)
    reference_out = tmp_path / "uninterrupted"
    generate(
        GenerateConfig(
            input_dir=root,
            output_dir=reference_out,
            families=FAMILIES,
            levels=tuple(float(v) for v in range(0, 101, 10)),
            seed=3,
            code_version="test",
        ),
        progress=False,
    )

    out = tmp_path / "killed"
    first = _run_and_kill(root, out, after_lines=1)
    second = _run_and_kill(root, out, after_lines=len(first) + 15)
    assert len(first) < len(second) < TOTAL
    finished = {entry["row"]["path"]: (out / entry["row"]["path"]).stat().st_mtime_ns for entry in second}

    done = subprocess.run(_command(root, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    match = re.search(r"generated (\d+) clip\(s\), reused (\d+) from an earlier run", done.stdout)
    assert match, done.stdout
    computed, reused = int(match[1]), int(match[2])
    assert reused == len(finished) and computed == TOTAL - len(finished)
    for rel, mtime_ns in finished.items():  # finished clips were not written again
        assert (out / rel).stat().st_mtime_ns == mtime_ns, rel

    assert (out / "manifest.csv").read_bytes() == (reference_out / "manifest.csv").read_bytes()
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    expected = sorted(p.relative_to(reference_out).as_posix() for p in reference_out.rglob("*.wav"))
    assert produced == expected and len(produced) == TOTAL
    for rel in produced:
        assert (out / rel).read_bytes() == (reference_out / rel).read_bytes(), rel
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]

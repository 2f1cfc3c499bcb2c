"""Bad inputs: each is named with its reason, the run goes on, the summary lists it.

Exit code: non-zero only when nothing could be produced, or with --strict.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perturbations.__main__ import main
from perturbations.generate import GenerateConfig, generate


def good_clip(path: Path, sample_rate: int = 16000, seconds: float = 1.0, channels: int = 1) -> Path:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    voiced = 0.2 * np.sin(2 * np.pi * 180 * t) * 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
    audio = np.stack([voiced] * channels, axis=1) if channels > 1 else voiced
    sf.write(str(path), audio.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def make_bad_files(root: Path) -> dict[str, str]:
    """Every kind of bad input; maps file name -> the reason the engine must give."""
    root.mkdir(parents=True, exist_ok=True)
    expected = {}

    (root / "empty.wav").write_bytes(b"")
    expected["empty.wav"] = "file is empty (0 bytes)"

    (root / "notes.wav").write_text("these are my notes, not audio\n")
    expected["notes.wav"] = "not readable as audio"

    picture = root / "picture.flac"  # a PNG header under an audio name
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expected["picture.flac"] = "not readable as audio"

    corrupt = good_clip(root / "corrupt.wav")
    data = bytearray(corrupt.read_bytes())
    data[8:36] = b"\xff" * 28  # WAVE id and fmt chunk destroyed, audio data intact
    corrupt.write_bytes(bytes(data))
    expected["corrupt.wav"] = "not readable as audio"

    os.symlink(root / "gone.wav", root / "dangling.wav")  # unreadable: points at nothing
    expected["dangling.wav"] = "file does not exist"

    sf.write(str(root / "silent.wav"), np.zeros(16000, np.float32), 16000)
    expected["silent.wav"] = "is silent"

    nan = np.full(16000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(root / "nan.wav"), nan, 16000, subtype="FLOAT")
    expected["nan.wav"] = "contains NaN or infinite samples"

    inf = np.full(16000, 0.1, np.float32)
    inf[200] = np.inf
    sf.write(str(root / "inf.wav"), inf, 16000, subtype="FLOAT")
    expected["inf.wav"] = "contains NaN or infinite samples"

    good_clip(root / "stereo.wav", channels=2)
    expected["stereo.wav"] = "has 2 channels; jndlab expects mono"

    good_clip(root / "odd_rate.wav", sample_rate=11025)
    expected["odd_rate.wav"] = "sample rate is 11025 Hz, expected 16000 Hz (pass --resample to convert)"

    good_clip(root / "short.wav", seconds=0.2)
    expected["short.wav"] = "is too short (0.200 s"

    if os.geteuid() != 0:  # root reads files whatever their mode
        unreadable = good_clip(root / "locked.wav")
        unreadable.chmod(0)
        expected["locked.wav"] = "not readable as audio"
    return expected


def _config(root: Path, out: Path, **changes) -> GenerateConfig:
    values = dict(input_dir=root, output_dir=out, families=("clipping",), levels=(0.0, 100.0), code_version="test")
    values.update(changes)
    return GenerateConfig(**values)


@pytest.fixture
def mixed(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "input"
    expected = make_bad_files(root)
    good_clip(root / "good.wav")
    return root, expected


def test_each_bad_file_is_named_with_its_reason_and_the_run_goes_on(mixed, tmp_path):
    root, expected = mixed
    messages: list[str] = []
    summary = generate(_config(root, tmp_path / "out"), progress=False, log=messages.append)
    skipped = {Path(source).name: reason for source, reason in summary.skipped}
    assert set(skipped) == set(expected)
    for name, reason in expected.items():
        assert reason in skipped[name], name
        assert any(
            message.startswith("skipped ") and str(root / name) in message and reason in message for message in messages
        ), name
    assert summary.num_stimuli == 2 and summary.new["reference"] == 1  # good.wav made it through
    assert f"skipped {len(expected)} input file(s):" in summary.format()


def test_resample_rescues_only_the_odd_rate(mixed, tmp_path):
    root, expected = mixed
    summary = generate(_config(root, tmp_path / "out", resample=True), progress=False, log=lambda _: None)
    assert {Path(source).name for source, _ in summary.skipped} == set(expected) - {"odd_rate.wav"}
    assert summary.new["reference"] == 2


def test_cli_exit_codes(mixed, tmp_path, capsys):
    root, expected = mixed
    args = ["generate", "--input", str(root), "--families", "clipping", "--levels", "0,100", "--no-progress"]
    assert main(args + ["--output", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"skipped {len(expected)} input file(s):" in out and "empty.wav: file is empty (0 bytes)" in out

    assert main(args + ["--output", str(tmp_path / "b"), "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --strict: {len(expected)} input(s) skipped, 0 stimulus/stimuli failed"

    only_bad = tmp_path / "only_bad"
    make_bad_files(only_bad)
    assert main(["generate", "--input", str(only_bad), "--output", str(tmp_path / "c"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: nothing could be produced from {only_bad}")
    assert not (tmp_path / "c" / "manifest.csv").exists()

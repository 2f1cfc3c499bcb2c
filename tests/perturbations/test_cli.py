"""python -m perturbations: help, one-line errors, list, preview, generate defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perturbations.__main__ import main
from perturbations.registry import available_families, get_family


def _clip(path: Path, sample_rate: int = 16000) -> Path:
    t = np.arange(sample_rate) / sample_rate
    audio = 0.2 * np.sin(2 * np.pi * 170 * t) * (1 - np.cos(2 * np.pi * 3 * t)) / 2
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JNDLAB_CODE_VERSION": "test"}
    return subprocess.run(
        [sys.executable, "-m", "perturbations", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_of_the_module():
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("generate", "list", "preview", "demo-corpus"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["generate", "list", "preview", "demo-corpus"])
def test_help_of_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert "usage: python -m perturbations " + command in capsys.readouterr().out


def test_generate_help_names_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--input",
        "--output",
        "--families",
        "--levels",
        "--seed",
        "--workers",
        "--scheduler",
        "--sample-rate",
        "--resample",
        "--strict",
        "--noise-dir",
        "--rir-dir",
        "--layout",
    ):
        assert option in text


def test_missing_input_folder_is_a_one_line_error(tmp_path):
    result = _cli("generate", "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: input folder {tmp_path / 'nowhere'} does not exist"]


def test_usage_errors_are_reported(tmp_path, capsys):
    _clip(tmp_path / "in" / "a.wav")
    base = ["generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(base + ["--families", "clipping,nope"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: unknown family nope; choose from noise")
    assert main(base + ["--noise-dir", str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(base + ["--levels", "0,200"])
    assert caught.value.code == 2 and "every level must lie in [0, 100]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--workers", "2", "--scheduler", "tcp://x:1"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_list_prints_every_family_with_ranges(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in available_families():
        assert f"\n{name}  [" in "\n" + text
        for parameter in get_family(name).parameters:
            assert parameter.name in text
    assert "level 0" in text and "level 100" in text
    assert "snr_db" in text and "bitrate_kbps" in text


def test_generate_with_defaults_except_families(tmp_path):
    _clip(tmp_path / "in" / "a.wav")
    result = _cli(
        "generate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--families", "clipping,mulaw"
    )
    assert result.returncode == 0, result.stderr
    assert "generated 23 clip(s), reused 0" in result.stdout  # 1 reference + 2 families × 11 levels
    assert "manifest:" in result.stdout
    assert "stimuli" in result.stderr  # the progress bar
    assert len((tmp_path / "out" / "manifest.csv").read_text().splitlines()) == 1 + 23


def test_preview_writes_the_ladder_and_a_spectrogram(tmp_path, capsys):
    ref = _clip(tmp_path / "ref.wav")
    out = tmp_path / "preview"
    assert main(["preview", str(ref), "--family", "lowpass", "--out", str(out), "--levels", "4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "lowpass_L000.wav",
        "lowpass_L033.33.wav",
        "lowpass_L066.67.wav",
        "lowpass_L100.wav",
        "reference.wav",
        "spectrograms.png",
    ]
    png = (out / "spectrograms.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    reference, _ = sf.read(str(out / "reference.wav"), dtype="float32")
    strongest, _ = sf.read(str(out / "lowpass_L100.wav"), dtype="float32")
    assert len(strongest) == len(reference)
    assert not np.array_equal(strongest, reference)
    assert "spectrograms.png" in capsys.readouterr().out


def test_preview_of_a_bad_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    assert main(["preview", str(bad), "--family", "noise", "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: not readable as audio")
    assert main(["preview", str(_clip(tmp_path / "ok.wav")), "--family", "nope"]) == 1
    assert "unknown family 'nope'" in capsys.readouterr().err

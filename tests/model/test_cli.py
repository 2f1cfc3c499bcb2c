"""python -m model distance / score / train: output contract and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from model import load_metric
from model.__main__ import main
from perturbations.audio import load_audio
from tests.model.conftest import train
from tests.model.test_checkpoint import make_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_distance_prints_note_then_the_number(pair_set, tmp_path, capsys):
    _, audio = pair_set
    make_checkpoint(tmp_path / "m.pt", trained_on="simulated")
    assert (
        main(["distance", str(audio / "ref0.wav"), str(audio / "r0_10.wav"), "--checkpoint", str(tmp_path / "m.pt")])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert "simulated" in lines[-2] and "no claim of perceptual validity" in lines[-2]
    ref, test = (torch.from_numpy(load_audio(audio / n)[0]) for n in ("ref0.wav", "r0_10.wav"))
    expected = float(load_metric(tmp_path / "m.pt", device="cpu")(ref, test))
    assert float(lines[-1]) == pytest.approx(expected, rel=1e-6)


def test_distance_of_a_human_checkpoint_says_so(pair_set, tmp_path, capsys):
    _, audio = pair_set
    make_checkpoint(tmp_path / "h.pt", trained_on="human")
    main(["distance", str(audio / "ref0.wav"), str(audio / "ref0.wav"), "--checkpoint", str(tmp_path / "h.pt")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "0" and "human" in lines[-2]


def test_distance_defaults_to_the_published_dpam(capsys):
    audio = Path(__file__).parent / "fixtures" / "sample_audio"
    assert main(["distance", str(audio / "ref.wav"), str(audio / "2.wav")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"{float(lines[-1]):.4f}" == "0.1929"  # DPAM's README value for the scratch model
    assert "DPAM scratch variant" in lines[-2] and "human" in lines[-2] and "JND" in lines[-2]


@pytest.mark.parametrize("name, variant", [("dpam-finetune", "finetune"), ("dpam-linear", "linear")])
def test_distance_names_the_variant(name, variant, capsys):
    audio = Path(__file__).parent / "fixtures" / "sample_audio"
    assert main(["distance", str(audio / "ref.wav"), str(audio / "4.wav"), "--checkpoint", name]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"DPAM {variant} variant" in lines[-2] and "human" in lines[-2] and float(lines[-1]) > 0


def test_score_writes_a_tsv_equal_to_one_by_one(pair_set, tmp_path):
    path, audio = pair_set
    make_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "scores.tsv"
    assert (
        main(
            [
                "score",
                "--pairs",
                str(path),
                "--audio-root",
                str(audio),
                "--checkpoint",
                str(tmp_path / "m.pt"),
                "--out",
                str(out),
                "--batch-size",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["ref", "perturbed", "label", "distance"] and len(table) == 16
    metric = load_metric(tmp_path / "m.pt", device="cpu")
    row = table.iloc[7]
    ref, test = (torch.from_numpy(load_audio(audio / n)[0]) for n in (row["ref"], row["perturbed"]))
    assert row["distance"] == pytest.approx(float(metric(ref, test)), rel=1e-5)


def test_errors_are_one_line_and_non_zero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "model", "distance", "a.wav", "b.wav", "--checkpoint", str(tmp_path / "missing.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "missing.pt" in result.stderr


@pytest.mark.parametrize("command", ["train", "distance", "score", "import-dpam"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out


def test_train_cli_one_epoch(pair_set, tmp_path, capsys):
    path, audio = pair_set
    assert (
        train(
            (path, audio),
            tmp_path / "run",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--segment-s",
            "0.25",
            "--trained-on",
            "simulated",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained 1 epoch" in out and "DEMO ONLY" in out

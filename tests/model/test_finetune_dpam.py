"""python -m model train --init dpam --regime finetune|linear: DPAM's regimes from its human weights."""

from __future__ import annotations

import pytest
import torch

from model import load_metric
from model.checkpoint import read_checkpoint
from model.network import DPAM_PORT_CONFIG
from tests.model.conftest import train


@pytest.mark.parametrize("regime", ["linear", "finetune"])
def test_train_from_the_shipped_dpam(pair_set, tmp_path, capsys, regime):
    path, audio = pair_set
    out = tmp_path / regime
    assert (
        train(
            (path, audio),
            out,
            "--init",
            "dpam",
            "--regime",
            regime,
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "1e-3",
            "--segment-s",
            "0.25",
            "--no-augment",
            "--trained-on",
            "simulated",
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trained 1 epoch" in printed and "initialised from dpam" in printed
    payload = read_checkpoint(out / "last.pt")
    assert payload["model_config"] == DPAM_PORT_CONFIG  # still the published network
    assert payload["training_config"]["init_checkpoint"] == "dpam" and payload["training_config"]["regime"] == regime
    assert payload["derived_from"]["name"] == "dpam" and payload["derived_from"]["trained_on"] == "human"
    assert payload["derived_from"]["provenance"]["license"] == "MIT"
    assert payload["trained_on"] == "simulated"  # the judgments of this run
    start, trained = load_metric("dpam", device="cpu").state_dict(), payload["state_dict"]
    conv_same = all(torch.equal(start[k], trained[k]) for k in start if k.startswith(("convs.", "norms.")))
    weights_moved = any(not torch.equal(start[k], trained[k]) for k in start if k.startswith("raw_weights."))
    assert weights_moved
    assert conv_same == (regime == "linear")  # linear: the backbone stays frozen
    # the judgment head was fitted to the data's distances before training (not left at log d = 0)
    assert float(trained["head_offset"]) != 0.0


def test_finetune_without_init_is_refused(pair_set, tmp_path, capsys):
    path, audio = pair_set
    assert train((path, audio), tmp_path / "x", "--regime", "finetune", "--epochs", "1") == 1
    assert "init" in capsys.readouterr().err


def test_unknown_init_name_is_one_clear_error(pair_set, tmp_path, capsys):
    path, audio = pair_set
    assert train((path, audio), tmp_path / "x", "--init", "dpam-nope", "--regime", "linear", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "dpam-nope" in err and "dpam-finetune" in err

"""python -m model import-dpam: TensorFlow's reader (tools env), tensor mapping, provenance, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_metric, metric_path
from model.__main__ import main
from model.checkpoint import read_checkpoint
from model.dpam_import import checkpoint_prefix, read_tf_checkpoint, state_dict_from_tf
from model.network import DPAM_PORT_CONFIG

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO.parent / "shared" / "dpam" / "published"
TF_PYTHON = REPO / ".venv-tf" / "bin" / "python"


def as_tf_tensors(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The inverse mapping, written independently: torch [Cout, Cin, k] -> TF [1, k, Cin, Cout]."""
    out = {}
    for i in range(14):
        out[f"loss_conv_{i}/weights"] = state[f"convs.{i}.weight"].numpy().transpose(2, 1, 0)[None]
        out[f"loss_conv_{i}/BatchNorm/beta"] = state[f"norms.{i}.bias"].numpy()
        out[f"weights_{i}"] = state[f"raw_weights.{i}"].numpy()
    return out


def test_tensor_mapping_round_trips_the_shipped_weights():
    shipped = load_metric("dpam-finetune", device="cpu").state_dict()
    rebuilt = state_dict_from_tf(as_tf_tensors(shipped), DPAM_PORT_CONFIG)
    for key in shipped:
        if not key.startswith("head_"):
            assert torch.equal(rebuilt[key], shipped[key]), key


def test_mapping_orients_the_kernel_taps_like_tensorflow():
    """A TF kernel [1, 3, 1, Cout] with taps (a, b, c) must correlate x[t-1]·a + x[t]·b + x[t+1]·c."""
    state = load_metric("dpam", device="cpu").state_dict()
    tensors = as_tf_tensors(state)
    kernel = np.zeros_like(tensors["loss_conv_0/weights"])
    kernel[0, :, 0, 0] = (1.0, 2.0, 3.0)
    tensors["loss_conv_0/weights"] = kernel
    mapped = state_dict_from_tf(tensors, DPAM_PORT_CONFIG)["convs.0.weight"]
    assert mapped[0, 0].tolist() == [1.0, 2.0, 3.0]


def test_missing_or_misshapen_tensors_are_named():
    tensors = as_tf_tensors(load_metric("dpam", device="cpu").state_dict())
    del tensors["weights_7"]
    with pytest.raises(ValueError, match="weights_7"):
        state_dict_from_tf(tensors, DPAM_PORT_CONFIG)
    tensors = as_tf_tensors(load_metric("dpam", device="cpu").state_dict())
    tensors["loss_conv_3/BatchNorm/beta"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"norms\.3\.bias"):
        state_dict_from_tf(tensors, DPAM_PORT_CONFIG)


def test_checkpoint_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TensorFlow checkpoint"):
        checkpoint_prefix(tmp_path / "nothing")
    (tmp_path / "a.index").write_bytes(b"")
    with pytest.raises(ValueError, match="no .data"):
        checkpoint_prefix(tmp_path)


def test_an_interpreter_without_tensorflow_gets_the_tools_env_hint(tmp_path):
    (tmp_path / "m.index").write_bytes(b"")
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"")
    # this interpreter is jndlab's own, which never has TensorFlow
    with pytest.raises(RuntimeError, match=r"no TensorFlow.*\.venv-tf.*tools/tf/requirements.txt"):
        read_tf_checkpoint(tmp_path, tf_python=sys.executable)
    with pytest.raises(RuntimeError, match="tools/tf/requirements.txt"):
        read_tf_checkpoint(tmp_path, tf_python=str(tmp_path / "no-python"))


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "m.index").write_bytes(b"")
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"")
    assert (
        main(
            [
                "import-dpam",
                "--tf-checkpoint",
                str(tmp_path),
                "--variant",
                "scratch",
                "--out",
                str(tmp_path / "o.pt"),
                "--tf-python",
                sys.executable,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tools/tf/requirements.txt" in err and not (tmp_path / "o.pt").exists()


@pytest.mark.skipif(
    not (TF_PYTHON.is_file() and PUBLISHED.is_dir()),
    reason="needs the tools env (.venv-tf, tools/tf/requirements.txt) and ../shared/dpam/published",
)
@pytest.mark.parametrize(
    "variant, folder, name", [("scratch", "scratch_loss", "dpam"), ("linear", "linear_layer_loss", "dpam-linear")]
)
def test_converting_the_published_checkpoint_reproduces_the_shipped_file(tmp_path, capsys, variant, folder, name):
    out = tmp_path / f"{name}.pt"
    assert (
        main(
            [
                "import-dpam",
                "--tf-checkpoint",
                str(PUBLISHED / folder),
                "--variant",
                variant,
                "--out",
                str(out),
                "--tf-python",
                str(TF_PYTHON),
            ]
        )
        == 0
    )
    assert "sha256" in capsys.readouterr().out
    new, shipped = read_checkpoint(out), read_checkpoint(metric_path(name))
    assert new["provenance"] == shipped["provenance"] and new["model_config"] == shipped["model_config"]
    for key, value in shipped["state_dict"].items():
        assert torch.equal(new["state_dict"][key], value), key

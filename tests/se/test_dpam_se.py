"""DPAM's published SE model: parity with its TensorFlow graph, the converter, the shipped weights,
and what one pass vs chunks does to its whole-signal statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from se.__main__ import main
from se.checkpoint import SHIPPED, WEIGHTS_DIR, load_enhancer, read_checkpoint
from se.dpam_import import convert, state_dict_from
from se.enhance import Enhancer
from se.networks import DPAMSENetwork, build_network, count_parameters
from tests.conftest import python_output

FIXTURE = Path(__file__).parent / "fixtures" / "dpam_se_parity.npz"
PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "dpam" / "published" / "se_model"
SR = 16000


@pytest.fixture(scope="module")
def dpam_se():
    return load_enhancer("dpam-se", device="cpu")


@pytest.fixture(scope="module")
def parity():
    data = np.load(FIXTURE)
    return [(data[f"input_{k}"], data[f"output_{k}"]) for k in range(sum(1 for f in data.files if f.startswith("in")))]


def test_parity_with_the_tensorflow_graph(dpam_se, parity):
    # fixtures: tools/tf/se_make_fixtures.py ran the published checkpoint in TensorFlow 2.21 + tf-slim
    assert [len(x) for x, _ in parity] == [16384, 12345, 4001, 997]
    for x, expected in parity:
        with torch.no_grad():
            got = dpam_se(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4, len(x)
        assert np.abs(expected).max() > 0.03  # the fixture is not a near-silent output


def _without_padding(net: DPAMSENetwork, x: torch.Tensor) -> torch.Tensor:
    """The port minus the original's dilation padding in the statistics (a plausible wrong port)."""
    h = x[None, None]
    for conv, norm in zip(net.convs, net.norms):
        h = F.leaky_relu(norm(conv(h)), net.negative_slope)
    return net.output(h)[0, 0]


def test_the_fixtures_tell_the_padded_statistics_apart(dpam_se, parity):
    # a length that is a multiple of every dilation has no padding; the others must show it
    diffs = []
    for x, expected in parity:
        with torch.no_grad():
            diffs.append(float(np.abs(_without_padding(dpam_se, torch.from_numpy(x)).numpy() - expected).max()))
    assert diffs[0] < 1e-4 and min(diffs[1:]) > 1e-3


def test_batch_items_keep_their_own_statistics(dpam_se, parity):
    (a, _), (b, _) = parity[1], parity[0]
    b = b[: len(a)]
    with torch.no_grad():
        batch = dpam_se(torch.from_numpy(np.stack([a, b])))
        one = dpam_se(torch.from_numpy(a))
    assert torch.allclose(batch[0], one, atol=1e-6)


def test_statistics_are_whole_signal():
    # unlike the eval-mode CAN, a change far outside the receptive field moves the output
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("dpam_can", n_layers=3, channels=4)
    with torch.no_grad():
        net.norms[0].w1.fill_(1.0)
    x = torch.randn(400)
    y = x.clone()
    y[-50:] *= 10
    with torch.no_grad():
        assert float((net(x)[:50] - net(y)[:50]).abs().max()) > 1e-4
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4 + 1)


def test_shipped_model_size_licence_and_provenance():
    net = load_enhancer("dpam-se", device="cpu")
    assert isinstance(net, DPAMSENetwork) and count_parameters(net) == 160_925
    assert net.receptive_field == 16_385 and not net.training
    payload = read_checkpoint("dpam-se")
    assert "Valentini" in payload["trained_on"] and payload["provenance"]["commit"] == "4bd0a84"
    licence = (WEIGHTS_DIR / "LICENSE-DPAM").read_text()
    assert "MIT License" in licence and "Pranay Manocha" in licence
    provenance = json.loads((WEIGHTS_DIR / "dpam_se.json").read_text())
    assert set(provenance["source_files"]) == {"se_model.ckpt.index", "se_model.ckpt.data-00000-of-00001"}
    if PUBLISHED.is_dir():  # the sha256 are those of the published files
        import hashlib

        for name, digest in provenance["source_files"].items():
            assert hashlib.sha256((PUBLISHED / name).read_bytes()).hexdigest() == digest
    assert SHIPPED == {"dpam-se": "dpam_se.pt"}


def _tf_names(net: DPAMSENetwork) -> dict[str, np.ndarray]:
    """The TF checkpoint's tensors for ``net``'s weights (the inverse of the converter's map)."""
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    out = {}
    for i in range(len(net.convs)):
        scope = f"se_conv_{i}" if i < len(net.convs) - 1 else "se_conv_last"
        out[f"{scope}/weights"] = sd[f"convs.{i}.weight"].transpose(2, 1, 0)[None]
        out[f"{scope}/BatchNorm/beta"] = sd[f"norms.{i}.beta"]
        out[f"{scope}/w0"] = np.float32(sd[f"norms.{i}.w0"])
        out[f"{scope}/w1"] = np.float32(sd[f"norms.{i}.w1"])
    out["se_fc_last/weights"] = sd["output.weight"].transpose(2, 1, 0)[None]
    out["se_fc_last/biases"] = sd["output.bias"]
    return out


def test_converter_maps_every_tensor_and_names_missing_ones(tmp_path, dpam_se):
    tensors = _tf_names(dpam_se)
    folder = tmp_path / "se_model"
    folder.mkdir()
    (folder / "se_model.ckpt.index").write_bytes(b"index")
    (folder / "se_model.ckpt.data-00000-of-00001").write_bytes(b"data")

    def reader(prefix):
        assert prefix.endswith("se_model.ckpt")
        return lambda name: tensors[name] if name in tensors else (_ for _ in ()).throw(ValueError(f"{name} missing"))

    provenance = convert(folder, tmp_path / "out.pt", reader=reader)
    assert set(provenance["source_files"]) == {"se_model.ckpt.index", "se_model.ckpt.data-00000-of-00001"}
    again = load_enhancer(tmp_path / "out.pt", device="cpu")
    for key, value in dpam_se.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    del tensors["se_conv_7/w1"]
    with pytest.raises(ValueError, match="se_conv_7/w1"):
        state_dict_from(
            lambda name: (
                tensors[name] if name in tensors else (_ for _ in ()).throw(ValueError(f"tensor {name!r} not found"))
            ),
            build_network("dpam_can"),
        )
    tensors["se_conv_7/w1"] = np.float32(0)
    tensors["se_fc_last/biases"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="output.bias"):
        state_dict_from(tensors.__getitem__, build_network("dpam_can"))


def test_converter_errors_are_one_line(tmp_path, capsys):
    assert main(["import-dpam", "--tf-checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "no such TensorFlow checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import-dpam", "--tf-checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "found 0" in capsys.readouterr().err


def test_jndlab_never_imports_tensorflow():
    code = (
        "import sys, se, se.networks, se.checkpoint, se.enhance, se.evaluate, se.trainer, se.__main__, "
        "se.dpam_import; se.checkpoint.load_enhancer('dpam-se', device='cpu'); "
        "print('tensorflow' in sys.modules)"
    )
    assert python_output(code) == "False"


def _noisy_speech(seconds: float, seed: int) -> np.ndarray:
    from tests.se.conftest import tone

    rng = np.random.default_rng(seed)
    clean = np.concatenate([tone(seed + k, 1.0) * rng.uniform(0.3, 3) for k in range(int(np.ceil(seconds)))])
    clean = clean[: int(seconds * SR)]
    return (clean + 0.02 * rng.standard_normal(len(clean))).astype(np.float32)


def test_enhance_cli_on_a_10_s_file_equals_one_pass(tmp_path, dpam_se):
    audio = _noisy_speech(10.0, 1)
    sf.write(str(tmp_path / "noisy.wav"), audio, SR, subtype="FLOAT")
    assert (
        main(
            [
                "enhance",
                "--checkpoint",
                "dpam-se",
                str(tmp_path / "noisy.wav"),
                str(tmp_path / "out.wav"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    out, rate = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    with torch.no_grad():
        one_pass = dpam_se(torch.from_numpy(audio)).numpy()
    scale = max(1.0, float(np.abs(one_pass).max()))  # the clipping guard scales the whole file down, if at all
    assert rate == SR and out.shape == audio.shape
    assert np.abs(out - one_pass / scale).max() < 1e-4


def test_default_is_one_pass_when_it_fits_and_chunks_change_the_output(dpam_se, caplog):
    audio = _noisy_speech(23.0, 2)  # longer than the 10 s chunk
    with torch.no_grad():
        one_pass = dpam_se(torch.from_numpy(audio)).numpy()
    auto = Enhancer(dpam_se, device="cpu")  # chunk_s="auto"
    assert auto.plans_one_pass(len(audio))
    assert np.abs(auto.enhance(audio, SR) - one_pass).max() < 1e-4
    # too little memory for one pass: windows, with a warning that the statistics are the window's
    tight = Enhancer(dpam_se, device="cpu", memory_bytes=auto.one_pass_bytes(len(audio)) - 1)
    assert not tight.plans_one_pass(len(audio))
    with caplog.at_level("WARNING", logger="se.enhance"):
        chunked = tight.enhance(audio, SR)
    assert "whole-signal statistics" in caplog.text
    assert chunked.shape == one_pass.shape and np.abs(chunked - one_pass).max() > 1e-4
    assert np.abs(Enhancer(dpam_se, device="cpu", chunk_s=None).enhance(audio, SR) - one_pass).max() < 1e-4

"""The port of DPAM's published metrics against TensorFlow's own outputs, and its properties.

Reference values: ``tools/tf/make_parity_fixtures.py`` ran the original graph (tf.compat.v1 +
tf-slim, restored from the published checkpoints) in the tools environment and wrote
``fixtures/dpam_parity.npz``: the three published sample pairs and synthesised pairs whose
lengths make the per-layer lengths mix odd and even (TensorFlow's asymmetric SAME padding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model import SHIPPED_METRICS, load_metric
from model.network import DPAM_PORT_CONFIG, DPAMMetric, tf_same_padding
from tests.conftest import python_ok

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = np.load(FIXTURES / "dpam_parity.npz")
VARIANTS = {"dpam": "scratch", "dpam-finetune": "finetune", "dpam-linear": "linear"}


def sample(name: str) -> torch.Tensor:
    audio, rate = sf.read(FIXTURES / "sample_audio" / name, dtype="float32")
    assert rate == 22050
    return torch.from_numpy(audio)


def pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if f"{name}/files" in PARITY:
        a, b = PARITY[f"{name}/files"]
        return sample(str(a)), sample(str(b))
    return torch.from_numpy(PARITY[f"{name}/ref"]), torch.from_numpy(PARITY[f"{name}/test"])


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name, device="cpu") for name in SHIPPED_METRICS}


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("pair_name", [str(p) for p in PARITY["pair_names"]])
def test_matches_tensorflow(metrics, name, pair_name):
    a, b = pair(pair_name)
    with torch.no_grad():
        d = float(metrics[name](a, b))
    expected = float(PARITY[f"{pair_name}/{VARIANTS[name]}/distance"])
    assert d == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_per_layer_terms_match_tensorflow(metrics, name):
    metric = metrics[name]
    a, b = pair("odd_12345")
    with torch.no_grad():
        fa, fb = metric.features(a[None]), metric.features(b[None])
        terms = [float((w[None, :, None] * (x - y).abs()).mean()) for x, y, w in zip(fa, fb, metric.layer_weights())]
    np.testing.assert_allclose(terms, PARITY[f"odd_12345/{VARIANTS[name]}/per_layer"], rtol=1e-3)


def test_published_sanity_value_and_order(metrics):
    ref, two, four = sample("ref.wav"), sample("2.wav"), sample("4.wav")
    with torch.no_grad():
        d2, d4 = float(metrics["dpam"](ref, two)), float(metrics["dpam"](ref, four))
    assert round(d2, 4) == 0.1929  # the value in DPAM's README
    assert d4 > d2  # upstream: 4.wav is perceptually farther from ref.wav than 2.wav


def test_tf_same_padding_rule():
    # even length with stride 2 pads (0, 1), odd pads (1, 1), stride 1 pads (1, 1)
    assert tf_same_padding(8, 3, 2) == (0, 1)
    assert tf_same_padding(7, 3, 2) == (1, 1)
    assert tf_same_padding(8, 3, 1) == (1, 1)
    assert tf_same_padding(1, 3, 2) == (1, 1)


def test_symmetric_padding_differs_from_the_graph(metrics):
    """Guards the config: the default symmetric padding would not reproduce the graph."""
    wrong = DPAMMetric(**{**DPAM_PORT_CONFIG, "padding": "symmetric"}).eval()
    wrong.load_state_dict(metrics["dpam"].state_dict())
    a, b = pair("odd_12345")
    with torch.no_grad():
        d = float(wrong(a, b))
    assert d != pytest.approx(float(PARITY["odd_12345/scratch/distance"]), rel=1e-3)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_identity_symmetry_non_negativity(metrics, name):
    metric = metrics[name]
    a, b = pair("unrelated_5001")
    x = torch.stack([a, b, a * 0.5])
    y = torch.stack([b, a, a])
    with torch.no_grad():
        assert torch.equal(metric(x, x), torch.zeros(3))
        d_xy, d_yx = metric(x, y), metric(y, x)
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-9)
    assert (d_xy[:2] > 0.1).all()
    # a gain change is nearly invisible: bias-free convs + per-signal normalisation leave only epsilon
    assert 0.0 <= float(d_xy[2]) < 1e-3


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_batch_equals_single(dtype, rtol):
    """Per-signal statistics: a pair's distance does not depend on the rest of the batch
    (exactly in float64; in float32 the conv kernels chosen per batch size round differently)."""
    metric = load_metric("dpam", device="cpu").to(dtype)
    g = torch.Generator().manual_seed(4)
    x = 0.1 * torch.randn(3, 6001, generator=g, dtype=dtype)
    y = x + 0.01 * torch.randn(3, 6001, generator=g, dtype=dtype) * torch.tensor([[0.1], [1.0], [10.0]], dtype=dtype)
    with torch.no_grad():
        together = metric(x, y, sample_rate=16000)
        alone = torch.stack([metric(x[i], y[i], sample_rate=16000) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=rtol, atol=0)


def test_gradient_reaches_the_input_at_16k(metrics):
    metric = metrics["dpam"]
    g = torch.Generator().manual_seed(5)
    clean = 0.1 * torch.randn(2, 8000, generator=g)
    enhanced = (clean + 0.05 * torch.randn(2, 8000, generator=g)).requires_grad_(True)
    loss = metric(clean, enhanced, sample_rate=16000).mean()
    loss.backward()
    assert enhanced.grad is not None and torch.isfinite(enhanced.grad).all() and enhanced.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.parameters())


def test_other_rate_is_resampled_with_torchaudio(metrics):
    import torchaudio.functional as AF

    metric = metrics["dpam-linear"]
    a, b = pair("odd_12345")
    a16, b16 = AF.resample(a, 22050, 16000), AF.resample(b, 22050, 16000)
    with torch.no_grad():
        direct = metric(a16, b16, sample_rate=16000)
        manual = metric(AF.resample(a16, 16000, 22050), AF.resample(b16, 16000, 22050))
    torch.testing.assert_close(direct, manual)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64, torch.uint8])
def test_integer_audio_is_refused(metrics, dtype):
    x = torch.zeros(4000, dtype=dtype)
    with pytest.raises(TypeError, match="integer PCM"):
        metrics["dpam"](x, x)
    with pytest.raises(TypeError, match=str(dtype)):
        metrics["dpam"](torch.zeros(4000), x)


def test_empty_and_single_sample_inputs(metrics):
    with pytest.raises(ValueError, match="empty"):
        metrics["dpam"](torch.zeros(0), torch.zeros(0))
    # one sample: every layer has one frame, normalised to its offset (TF's batch norm does the same)
    with torch.no_grad():
        assert float(metrics["dpam"](torch.tensor([0.1]), torch.tensor([-0.2]))) >= 0.0


def test_sixteen_bit_scaling_is_the_metric_s_job(metrics):
    """The graph was fed 16-bit units: without input_scale, float audio gives another distance."""
    unscaled = DPAMMetric(**{**DPAM_PORT_CONFIG, "input_scale": 1.0}).eval()
    unscaled.load_state_dict(metrics["dpam"].state_dict())
    ref, two = sample("ref.wav"), sample("2.wav")
    with torch.no_grad():
        assert float(unscaled(ref, two)) != pytest.approx(0.1929, rel=0.05)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shipped_metrics_say_what_they_are(metrics, name):
    metric = metrics[name]
    assert metric.trained_on == "human" and metric.variant == VARIANTS[name] and metric.metric_name == name
    assert "human" in metric.perceptual_validity and "DPAM JND dataset" in metric.perceptual_validity
    assert VARIANTS[name] in metric.perceptual_validity
    prov = metric.provenance
    assert prov["source_repository"].endswith("pranaymanocha/PerceptualAudio") and prov["source_commit"] == "4bd0a84"
    assert prov["license"] == "MIT" and prov["trained_on"] == "human"
    assert all(len(h) == 64 for h in prov["source_files"].values()) and len(prov["source_files"]) == 2
    assert metric.config == {**DPAM_PORT_CONFIG}
    assert f"variant={VARIANTS[name]}" in repr(metric) and "trained_on=human" in repr(metric)
    assert not any(p.requires_grad for p in metric.parameters()) and not metric.training


def test_unknown_name_lists_the_shipped_metrics():
    with pytest.raises(FileNotFoundError, match="dpam-finetune"):
        load_metric("dpam-nonexistent")


OFFLINE_PROBE = r"""
import sys

def guard(event, args):
    if event.startswith("socket.") and event not in ("socket.gethostname",):
        raise RuntimeError(f"network use: {event}")
    if event == "open" and isinstance(args[0], (str, bytes)) and "shared" in str(args[0]).split("/"):
        raise RuntimeError(f"read from a shared folder: {args[0]}")

sys.addaudithook(guard)
import torch
from model import load_metric
metric = load_metric("dpam", device="cpu")
x = torch.linspace(-0.5, 0.5, 4000)
d = float(metric(x, x.flip(0), sample_rate=16000))
print(metric.variant, metric.trained_on, d > 0)
"""


def test_load_metric_works_offline_without_shared(tmp_path):
    """No network and no ../shared: an audit hook refuses sockets and any path through a 'shared' folder."""
    proxy = "http://0.0.0.0:9"
    stdout = python_ok(["-c", OFFLINE_PROBE], tmp_path, NO_PROXY="*", HTTP_PROXY=proxy, HTTPS_PROXY=proxy)
    assert stdout.split() == ["scratch", "human", "True"]

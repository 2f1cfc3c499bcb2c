"""The training runtime: precision, the clipped step, checkpoints and resume, history, and
the reductions under two gloo processes (the trainers' end-to-end runs: test_train.py, tests/se)."""

from __future__ import annotations

import json
import math
import socket
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from model.checkpoint import build_payload, read_checkpoint
from model.network import DPAMMetric
from model.runtime import Curve, Runtime, save_checkpoints, write_history
from tests.conftest import python_ok

REPO = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()


def _linear(seed: int = 0) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(4, 1)


def test_precision_choices():
    rt = Runtime()
    assert rt.precision == ("16-mixed" if CUDA else "32") and rt.world_size == 1 and rt.main
    with pytest.raises(ValueError, match="precision must be one of"):
        Runtime("fp8")
    if not CUDA:
        with pytest.raises(ValueError, match="needs CUDA"):
            Runtime("16-mixed")


def test_bf16_autocast_on_cpu_steps_without_loss_scaling():
    rt = Runtime("bf16-mixed")
    net = rt.prepare(_linear())
    x = torch.randn(8, 4, device=rt.device)
    with rt.autocast():
        y = net(x)
    assert y.dtype == torch.bfloat16
    stepper = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1))
    assert not stepper.scaler.is_enabled()
    before = net.weight.detach().clone()
    with rt.autocast():
        loss = net(x).float().square().mean()
    stepper.step(loss)
    assert math.isfinite(float(loss.detach())) and not torch.equal(before, net.weight)
    with Runtime("32").autocast():
        assert net(x).dtype == torch.float32


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_float16_on_cuda_scales_the_loss_and_round_trips_the_scaler():
    rt = Runtime()
    net = rt.prepare(_linear())
    stepper = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1), max_grad_norm=1.0)
    assert stepper.scaler.is_enabled()
    x = torch.randn(8, 4, device=rt.device)
    with rt.autocast():
        out = net(x)
        loss = out.float().square().mean()
    assert out.dtype == torch.float16
    stepper.step(loss)
    state = stepper.state_dict()
    assert state["scaler"]["scale"] > 0
    again = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1))
    again.load_state_dict(state)
    assert again.scaler.get_scale() == stepper.scaler.get_scale()


def test_step_clips_the_gradient_norm():
    rt = Runtime("32")
    net = _linear()
    x, target = torch.ones(2, 4), torch.full((2, 1), 100.0)
    manual = _linear()
    loss = (manual(x) - target).square().mean()
    loss.backward()
    grads = [p.grad.clone() for p in manual.parameters()]
    norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
    assert norm > 1.0  # the clip acts
    stepper = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.5), max_grad_norm=1.0)
    stepper.step((net(x) - target).square().mean())
    for p, p0, g in zip(net.parameters(), manual.parameters(), grads):
        assert torch.allclose(p, p0 - 0.5 * g / norm, atol=1e-6)
    with pytest.raises(ValueError, match="max_grad_norm"):
        rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1), max_grad_norm=-1.0)


def _metric(seed: int) -> DPAMMetric:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DPAMMetric(n_layers=2, base_channels=2)


def test_checkpoints_and_resume(tmp_path):
    rt = Runtime("32")
    metric = _metric(0)
    stepper = rt.stepper(torch.optim.Adam(metric.parameters(), lr=0.1))
    assert rt.resume(tmp_path, read_checkpoint, metric, stepper) is None  # a fresh folder
    x = torch.randn(2, 400)
    stepper.step(metric(x, x + 0.1).sum())
    state = {**stepper.state_dict(), "epoch": 0}
    payload = build_payload(metric, training_config={}, seed=0, metrics={}, trained_on="simulated", trainer_state=state)
    save_checkpoints(tmp_path, payload, best=True)
    assert "trainer_state" in read_checkpoint(tmp_path / "last.pt")
    best = read_checkpoint(tmp_path / "best.pt")
    assert "trainer_state" not in best and "trainer_state" in payload  # the caller's payload is left whole

    other = _metric(1)
    other_stepper = rt.stepper(torch.optim.Adam(other.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="another run"):
        rt.resume(
            tmp_path,
            read_checkpoint,
            other,
            other_stepper,
            check=lambda p: (_ for _ in ()).throw(ValueError("another run")),
        )
    assert not torch.equal(other.state_dict()["convs.0.weight"], metric.state_dict()["convs.0.weight"])  # untouched
    got = rt.resume(tmp_path, read_checkpoint, other, other_stepper)
    assert got["epoch"] == 0
    for key, value in metric.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    steps = [float(s["step"]) for s in other_stepper.optimizer.state_dict()["state"].values()]
    assert steps and set(steps) == {1.0}  # Adam's moments came back with the weights

    save_checkpoints(tmp_path, {k: v for k, v in payload.items() if k != "trainer_state"}, best=False)
    with pytest.raises(ValueError, match="no trainer state"):
        rt.resume(tmp_path, read_checkpoint, other, other_stepper)


def test_history_is_strict_json_and_the_curve_skips_absent_keys(tmp_path):
    history = [{"epoch": 1, "train_bce": 0.7, "val_roc_auc": float("nan")}, {"epoch": 2, "train_bce": 0.5}]
    write_history(
        tmp_path,
        {"note": "x", "epochs": history},
        history,
        x="epoch",
        curves=(Curve("train_bce", "train"), Curve("val_bce", "val", "s-"), Curve("val_roc_auc", "AUC", panel=1)),
        title="t",
        right_ylabel="AUC",
    )
    text = (tmp_path / "history.json").read_text()
    assert json.loads(text)["epochs"][0]["val_roc_auc"] is None and "NaN" not in text
    assert (tmp_path / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.part"))


_TWO_PROCESSES = textwrap.dedent("""
    import json, sys, torch
    from torch import nn
    from model.runtime import Runtime

    rt = Runtime("32")
    assert rt.world_size == 2, rt.world_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
    x = torch.arange(12.0).reshape(4, 3) / 10
    stepper = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1), max_grad_norm=0.5)
    model = rt.wrap(net)
    for _ in range(2):
        stepper.step(model(x[rt.rank::2]).square().mean())
    out = {"sum": rt.all_sum([rt.rank + 1, 0.5]), "mean": rt.all_mean([rt.rank]),
           "gather": rt.gather({"rank": rt.rank}), "weight": net.weight.detach().flatten().tolist()}
    rt.barrier()
    if rt.main:
        print(json.dumps(out))
""")


@pytest.mark.slow  # two torch processes start up
def test_two_gloo_processes_reduce_and_step_as_one(tmp_path):
    script = tmp_path / "two.py"
    script.write_text(_TWO_PROCESSES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", str(script)]
    # gloo by name: on the CPU even where CUDA is present (one GPU cannot hold two nccl ranks)
    stdout = python_ok(args, REPO, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["sum"] == [3.0, 1.0] and out["mean"] == [0.5] and out["gather"] == [{"rank": 0}, {"rank": 1}]
    # one process on the whole batch: DDP averages the two halves' gradients, the same as the mean over 4
    rt = Runtime("32")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
    x = torch.arange(12.0).reshape(4, 3) / 10
    stepper = rt.stepper(torch.optim.SGD(net.parameters(), lr=0.1), max_grad_norm=0.5)
    for _ in range(2):
        stepper.step(net(x).square().mean())
    assert out["weight"] == pytest.approx(net.weight.detach().flatten().tolist(), rel=1e-6)


def _two_ranks_on(monkeypatch, n_gpus: int, local_rank: int = 1, local_world_size: str | None = "2") -> list:
    """torchrun's environment for rank ``local_rank`` of 2 on a machine with ``n_gpus``
    (mocked) CUDA devices; returns the list that records set_device/init_process_group."""
    from model import runtime

    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    env = {"WORLD_SIZE": "2", "RANK": str(local_rank), "LOCAL_RANK": str(local_rank)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    return calls


@pytest.mark.parametrize("local_rank, local_world_size", [(1, "2"), (0, "2"), (1, None)])
def test_more_processes_than_gpus_is_refused_naming_the_cure(monkeypatch, local_rank, local_world_size):
    """nccl refuses two ranks on one GPU with an error naming neither cause nor cure (seen on
    an H200: torchrun --nproc_per_node=2 on one GPU); every rank says what to do instead,
    before touching the GPU (without LOCAL_WORLD_SIZE, the rank that finds no GPU of its own)."""
    from model import runtime

    calls = _two_ranks_on(monkeypatch, 1, local_rank, local_world_size)
    with pytest.raises(ValueError, match=r"2 training processes on this machine but 1 CUDA device.*--nproc_per_node=1"):
        runtime.setup_distributed()
    assert calls == []


def test_one_gpu_per_process_starts_nccl_on_the_local_rank_gpu(monkeypatch):
    from model import runtime

    calls = _two_ranks_on(monkeypatch, 2)
    got = runtime.setup_distributed()
    assert (got.rank, got.world_size, got.device) == (1, 2, torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]

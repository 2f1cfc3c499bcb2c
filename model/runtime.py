"""The training runtime both trainers use: processes and device, AMP, the optimiser step,
checkpoints and resume, history and curves. Each trainer keeps only its data, loss and
validation (``model.trainer``: the metric on judged pairs; ``se.trainer``: the enhancer).

- **Processes and device.** ``Runtime()`` reads torchrun's environment (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT): one process without it; with WORLD_SIZE > 1 the process
  group starts with gloo on CPU and nccl on CUDA (one GPU per local rank).
  ``wrap(module)`` gives the DistributedDataParallel view for training (the module itself
  with one process); ``all_sum``, ``all_mean``, ``gather`` and ``barrier`` reduce across
  processes (and are the identity with one).
- **Precision.** ``"auto"``: float16 autocast with loss scaling on CUDA, float32 on CPU;
  ``"bf16-mixed"``: bfloat16 autocast (CPU or CUDA, no loss scaling); ``"32"``: float32.
- **Optimiser step.** ``runtime.stepper(optimizer, parameters, max_grad_norm)``: zero the
  gradients, scale and backpropagate the loss, unscale and clip to ``max_grad_norm``
  (L2 norm over ``parameters``; 0 = no clipping), step, update the scale.
- **Checkpoints.** ``save_checkpoints`` writes ``last.pt`` (with ``trainer_state``: a rerun
  resumes by itself) and, when best, ``best.pt`` (the same payload without it), each one
  file written atomically (``model.checkpoint.save_checkpoint``; DESIGN.md "Checkpoints").
  ``resume`` reads ``last.pt`` back into the module and the stepper.
- **History.** ``write_history`` writes ``history.json`` (strict JSON, atomic) and
  ``training_curve.png`` from ``Curve`` specs.

Why not Lightning Fabric (tried: lightning-fabric 2.6.6, torch 2.11, CPU). A Fabric-backed
version of this module (``Fabric(strategy="ddp")``, ``setup_module``, ``setup_optimizers``,
``backward``, ``clip_gradients``, ``all_reduce``, ``autocast``) passed the trainers' tests
unchanged (tests/model/test_train.py and tests/se/test_train.py: 13 passed, two-process
gloo DDP under torchrun == one process included), and its bf16-mixed ran on CPU. But it
covers only the process, precision and step duties above: ``all_gather_object`` (the
metric's validation rows), SyncBatchNorm, the single-file checkpoint with its trainer
state, resume and history stay ours, and resume reaches the GradScaler state through its
precision plugin (``fabric.strategy.precision.state_dict()``). It shortened the code of
``Dist``/``setup_distributed``/``Stepper``/``Runtime`` from 112 to 90 lines (docstrings
and comments not counted), and cost two packages (lightning-fabric, lightning-utilities),
1.8-2.5 s more start-up in every process (it imports ``torch._dynamo``; each torchrun rank
and each ``python -m model train``/``se train`` pays it; ``import model.trainer, se.trainer``
plus a runtime took 12.3-14.6 s without it and 18.5-22.8 s with it on the loaded 2-core
test machine), a banner on stdout at each DDP start, and a second precision vocabulary
(its ``16-mixed`` on a CPU warns, an error under the tests' ``filterwarnings = error``).
Twenty-two lines of plain ``torch.distributed``/``torch.amp`` calls do not pay for that.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("model.runtime")
M = TypeVar("M", bound=nn.Module)
PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")


@dataclass(frozen=True)
class Dist:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0


def setup_distributed() -> Dist:
    """Read torchrun's environment; start the process group when WORLD_SIZE > 1.

    Device: CUDA device ``LOCAL_RANK`` when CUDA is available, else the CPU.
    Backend: nccl on CUDA, gloo on CPU (``init_method="env://"``: MASTER_ADDR/MASTER_PORT).
    A process group already started is kept. Raises ``ValueError`` for non-integer
    RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE, and for more processes on this machine
    than CUDA devices (nccl refuses two ranks on one GPU, with an error that names
    neither cause nor cure); whatever ``init_process_group`` raises (RuntimeError,
    DistStoreError) when the rendezvous fails.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        n_gpus = torch.cuda.device_count()
        local_world = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), local + 1)
        if world > 1 and local_world > n_gpus:
            raise ValueError(
                f"{local_world} training processes on this machine but {n_gpus} CUDA "
                f"device(s): DDP on CUDA (nccl) needs one GPU per process. Start torchrun with "
                f"--nproc_per_node={n_gpus}, or train on the CPU (gloo) with CUDA_VISIBLE_DEVICES=''"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=rank, world_size=world
        )
    return Dist(rank, world, local, device)


class Stepper:
    """One optimiser step per ``step(loss)``, with loss scaling (float16 autocast) and clipping.

    Made by ``Runtime.stepper``. ``state_dict()`` is ``{"optimizer": ..., "scaler": ...}``,
    the keys a trainer state has always held.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[nn.Parameter] | None,
        max_grad_norm: float,
        scaled: bool,
    ):
        if max_grad_norm < 0 or math.isnan(max_grad_norm):
            raise ValueError(f"max_grad_norm must be >= 0 (0: no clipping), got {max_grad_norm}")
        self.optimizer = optimizer
        self.parameters = (
            list(parameters)
            if parameters is not None
            else [p for group in optimizer.param_groups for p in group["params"]]
        )
        self.max_grad_norm = float(max_grad_norm)
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate the scalar ``loss`` and take one step (skipped by the scaler on inf/NaN gradients)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a trainer state (``KeyError`` when it lacks ``optimizer`` or ``scaler``)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


class Runtime:
    """This process's place in the run, its precision, and the calls that reduce across processes.

    ``precision``: one of ``PRECISIONS`` (see the module doc). Raises ``ValueError`` for an
    unknown one, and for ``"16-mixed"`` without CUDA (float16 needs loss scaling on a GPU;
    use ``"bf16-mixed"`` on CPU).
    """

    def __init__(self, precision: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.dist = setup_distributed()
        self.device = self.dist.device
        if precision == "auto":
            precision = "16-mixed" if self.device.type == "cuda" else "32"
        if precision == "16-mixed" and self.device.type != "cuda":
            raise ValueError("precision 16-mixed needs CUDA; use bf16-mixed on CPU")
        self.precision = precision

    # -- where we are ------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world_size(self) -> int:
        return self.dist.world_size

    @property
    def main(self) -> bool:
        return self.dist.main

    # -- modules and steps -------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's mixed-precision context (a no-op at precision ``"32"``)."""
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "16-mixed" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare(self, module: M, *, sync_batchnorm: bool = False) -> M:
        """``module`` on this process's device; with ``sync_batchnorm``, its BatchNorms synchronised
        across processes (CUDA with several processes only). Returns the module to keep: ``module``
        itself, its BatchNorm layers replaced in place (torch replaces a module that is itself a
        BatchNorm layer by a new one; no caller passes one)."""
        if sync_batchnorm and self.device.type == "cuda" and self.world_size > 1:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return module.to(self.device)

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module to train through: DistributedDataParallel (gradients averaged over
        processes at backward) with several processes, else ``module`` itself."""
        if self.world_size == 1:
            return module
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device] if self.device.type == "cuda" else None
        )

    def stepper(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[nn.Parameter] | None = None,
        max_grad_norm: float = 0.0,
    ) -> Stepper:
        """A ``Stepper`` for ``optimizer``; clipping over ``parameters`` (default: the optimizer's)."""
        return Stepper(optimizer, parameters, max_grad_norm, scaled=self.precision == "16-mixed")

    # -- across processes ----------------------------------------------------------------------
    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over processes (float64); every process gets the result."""
        if self.world_size == 1:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def all_mean(self, values: Sequence[float]) -> list[float]:
        """Element-wise mean over processes (each process's value weighs the same)."""
        return [v / self.world_size for v in self.all_sum(values)]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""
        if self.world_size > 1:
            dist.barrier()

    # -- checkpoints -----------------------------------------------------------------------------
    def resume(
        self,
        out: str | os.PathLike,
        read: Callable[[Path], dict[str, Any]],
        module: nn.Module,
        stepper: Stepper,
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any] | None:
        """Load ``OUT/last.pt`` (through ``read``) into ``module`` and ``stepper``; return its trainer state.

        ``None`` when there is no ``last.pt`` (a fresh run). ``check(payload)`` runs before
        anything is loaded and raises to refuse (e.g. another loss). Raises ``ValueError``
        when ``last.pt`` holds no trainer state (a ``best.pt`` copied there), and whatever
        ``read`` raises for an unreadable file.
        """
        last = Path(out) / "last.pt"
        if not last.is_file():
            return None
        payload = read(last)
        state = payload.get("trainer_state")
        if state is None:
            raise ValueError(f"{last}: has no trainer state to resume from; use a fresh --out folder")
        if check is not None:
            check(payload)
        module.load_state_dict(payload["state_dict"])
        stepper.load_state_dict(state)
        if self.main:
            log.info("resuming from %s", last)
        return state


def save_checkpoints(out: str | os.PathLike, payload: dict[str, Any], *, best: bool) -> None:
    """Write ``OUT/last.pt`` = ``payload`` and, when ``best``, ``OUT/best.pt`` = ``payload``
    without its ``trainer_state``; each atomically. Call on the main process only.
    Raises ``OSError`` when a file cannot be written."""
    from model.checkpoint import save_checkpoint

    save_checkpoint(payload, Path(out) / "last.pt")
    if best:
        save_checkpoint({k: v for k, v in payload.items() if k != "trainer_state"}, Path(out) / "best.pt")


@dataclass(frozen=True)
class Curve:
    """One line of ``training_curve.png``: history ``key``, legend ``label``, matplotlib ``style``.
    ``panel`` 0 is the left (losses), 1 the right (scores)."""

    key: str
    label: str
    style: str = "o-"
    panel: int = 0


def write_history(
    out: str | os.PathLike,
    document: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    x: str,
    curves: Sequence[Curve],
    title: str,
    right_ylabel: str | None = None,
) -> None:
    """``OUT/history.json`` (``document``, strict JSON: NaN -> null) and ``OUT/training_curve.png``.

    The figure plots each ``Curve`` whose key some history entry has, against the entries'
    ``x`` (e.g. ``"epoch"`` or ``"step"``), missing values as gaps. Both files are written
    atomically; call on the main process only. Raises ``OSError`` when a file cannot be
    written, ``KeyError`` when an entry lacks ``x``.
    """
    from perturbations.files import atomic_path, atomic_write_json

    out = Path(out)
    atomic_write_json(out / "history.json", document)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [h[x] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for curve in curves:
        if any(curve.key in h for h in history):
            axes[curve.panel].plot(xs, [h.get(curve.key, math.nan) for h in history], curve.style, label=curve.label)
    for ax in axes:
        ax.set_xlabel(x)
        if ax.lines:
            ax.legend()
    if right_ylabel and axes[1].lines:
        axes[1].set_ylabel(right_ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out / "training_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

"""Train a DPAM metric on judged pairs: regimes, DDP, AMP, validation, resume, early stopping.

Regimes (as in DPAM):
- ``scratch``: random initialisation, everything trained;
- ``pretrained``: the backbone first learns the pretext task (``model.pretext``), then
  everything is trained on the judgments;
- ``linear``: the backbone is frozen (from ``init_checkpoint`` or, without one, from the
  pretext task) and only the per-channel weights and the judgment head are trained;
- ``finetune``: everything trained, starting from ``init_checkpoint``.

``init_checkpoint`` may name a shipped metric (``"dpam"``, ``"dpam-finetune"``,
``"dpam-linear"``): ``--init dpam --regime finetune|linear`` is DPAM's own finetune and
linear regime, started from its human-trained weights, on a lab's judgments. The network
then keeps the published config (22.05 kHz, 16-bit input scale, TF padding ...); judged
clips at other rates are resampled by ``AudioStore``.

One process or many: under ``torchrun`` the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT) selects DDP with gloo on CPU and nccl on CUDA. ``batch_size`` is the
*global* batch; each rank takes its share of the same seeded permutation, and every
random choice about item i comes from (seed, epoch, i), so one process and N processes
see the same global batches.

The output folder holds ``last.pt`` (with trainer state: a rerun resumes by itself),
``best.pt`` (lowest validation BCE), ``history.json`` and ``training_curve.png``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.augment import PairAugment, PairGain, PairShift, SwapAB
from model.checkpoint import build_payload, read_checkpoint, save_checkpoint, validity_note
from model.data import AudioStore, PairDataset, ShardedSampler, collate_pairs, split_by_reference
from model.metrics import judgment_metrics
from model.network import DPAMMetric
from perturbations.provenance import json_safe

log = logging.getLogger("model.trainer")
REGIMES = ("scratch", "pretrained", "linear", "finetune")


@dataclass
class TrainConfig:
    regime: str = "scratch"
    epochs: int = 20
    batch_size: int = 16  # global, over all processes
    lr: float = 1e-4
    weight_decay: float = 0.0
    segment_s: float | None = 2.0  # training window; None: whole clips (needs equal lengths)
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 5  # epochs without a better validation BCE before stopping; 0: never stop
    max_grad_norm: float = 5.0
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9): its steps scale with the gradient, so
    # float-noise-level differences stay small (Adam's first steps are ±lr whatever |g| is)
    amp: bool = True  # on CUDA only
    augment: bool = True
    init_checkpoint: str | None = None
    pretext_epochs: int = 3
    pretext_clips: int = 256
    pretext_families: tuple[str, ...] = ("noise", "eq", "lowpass", "clipping", "mulaw", "mp3")
    pretext_buckets: int = 3
    model: dict[str, Any] = field(default_factory=dict)  # DPAMMetric kwargs
    progress: bool = True

    def __post_init__(self):
        if self.regime not in REGIMES:
            raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {self.regime!r}")
        if self.regime == "finetune" and not self.init_checkpoint:
            raise ValueError("the finetune regime needs init_checkpoint (--init CKPT)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        self.pretext_families = tuple(self.pretext_families)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["pretext_families"] = list(self.pretext_families)
        return out


# -- distributed ------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Read torchrun's environment; start the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
    return Dist(rank, world, local, device)


def _all_sum(values: list[float], d: Dist) -> list[float]:
    if d.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def _gather(obj, d: Dist) -> list:
    if d.world_size == 1:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


# -- model wrappers ----------------------------------------------------------------------------
class PairJudge(nn.Module):
    """metric + head in one forward, so DDP sees every trained parameter used."""

    def __init__(self, metric: DPAMMetric):
        super().__init__()
        self.metric = metric

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distance = self.metric(a, b)
        return distance, self.metric.judgment_logit(distance)


def _wrap(module: nn.Module, d: Dist) -> nn.Module:
    if d.world_size == 1:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[d.device] if d.device.type == "cuda" else None)


def _autocast(d: Dist, cfg: TrainConfig):
    if d.device.type == "cuda" and cfg.amp:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _build_metric(cfg: TrainConfig, d: Dist) -> tuple[DPAMMetric, dict[str, Any] | None]:
    """A fresh metric, or one rebuilt from ``cfg.init_checkpoint``: a shipped metric name
    (``"dpam"``, ``"dpam-finetune"``, ``"dpam-linear"``: DPAM's human-trained weights) or a path."""
    from model import metric_path

    init = read_checkpoint(metric_path(cfg.init_checkpoint)) if cfg.init_checkpoint else None
    kwargs = dict(init["model_config"]) if init else {}
    kwargs.update(cfg.model)
    # weight init draws from torch's generator: fork it so the seed stays local to this call
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        metric = DPAMMetric(**kwargs)
    if init:
        metric.load_state_dict(init["state_dict"])
    return metric.to(d.device), init


# -- training ----------------------------------------------------------------------------------
class Trainer:
    """``Trainer(pairs, out_dir, cfg, trained_on).run()`` -> summary dict (see module doc)."""

    def __init__(self, pairs: pd.DataFrame, out_dir: str | os.PathLike, cfg: TrainConfig, trained_on: str = "unknown"):
        validity_note(trained_on)  # validates the value
        self.cfg, self.trained_on = cfg, trained_on
        self.out = Path(out_dir)
        self.d = setup_distributed()
        self.out.mkdir(parents=True, exist_ok=True)
        self.metric, self._init = _build_metric(cfg, self.d)
        self.sample_rate = self.metric.sample_rate
        self.segment = None if cfg.segment_s is None else max(1, int(round(cfg.segment_s * self.sample_rate)))
        self.store = AudioStore(self.sample_rate)
        usable = self.store.usable(pairs)
        if usable.empty:
            raise ValueError("no judged pair has two readable audio files")
        self.train_pairs, self.val_pairs = split_by_reference(usable, cfg.val_fraction, cfg.seed)
        if cfg.batch_size % self.d.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.d.world_size} processes")
        self.per_rank_batch = cfg.batch_size // self.d.world_size
        augment = PairAugment(PairGain(), PairShift(), SwapAB()) if cfg.augment else None
        self.train_set = PairDataset(self.train_pairs, self.store, self.segment, augment, cfg.seed, train=True)
        self.val_set = PairDataset(self.val_pairs, self.store, self.segment, None, cfg.seed, train=False)
        self.metric.dropout_generator = torch.Generator(device=self.d.device).manual_seed(cfg.seed * 1009 + self.d.rank)
        self.history: list[dict[str, Any]] = []
        self.best_bce, self.bad_epochs, self.start_epoch, self.stopped = math.inf, 0, 0, False

    # parameters each regime trains
    def _configure_trainable(self) -> list[nn.Parameter]:
        frozen = self.cfg.regime == "linear"
        for p in self.metric.backbone_parameters():
            p.requires_grad_(not frozen)
        return [p for p in self.metric.parameters() if p.requires_grad]

    def _loader(self, dataset, shuffle: bool, epoch: int):
        sampler = ShardedSampler(len(dataset), self.cfg.seed, shuffle, self.d.rank, self.d.world_size)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        return torch.utils.data.DataLoader(dataset, batch_size=self.per_rank_batch, sampler=sampler,
                                           collate_fn=collate_pairs, num_workers=0)

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "history": self.history, "best_bce": self.best_bce, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped, "dropout_generator": self.metric.dropout_generator.get_state(),
            "world_size": self.d.world_size,
        }

    def _resume(self) -> bool:
        last = self.out / "last.pt"
        if not last.is_file():
            return False
        payload = read_checkpoint(last)
        state = payload.get("trainer_state")
        if state is None:
            raise ValueError(f"{last}: has no trainer state to resume from; use a fresh --out folder")
        self.metric.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.best_bce, self.bad_epochs, self.stopped = float(state["best_bce"]), int(state["bad_epochs"]), bool(state["stopped"])
        if self.d.world_size == state.get("world_size", 1):
            self.metric.dropout_generator.set_state(state["dropout_generator"].cpu())
        self.start_epoch = int(state["epoch"]) + 1
        if self.d.main:
            log.info("resuming from %s at epoch %d", last, self.start_epoch + 1)
        return True

    def _pretext(self) -> dict[str, Any]:
        from model.pretext import PretextClassifier, make_pretext_set

        cfg = self.cfg
        refs = [a for a in (self.store.load(p) for p in pd.unique(self.train_pairs["ref_audio"])) if a is not None]
        # BS.1770 loudness matching needs at least one 0.4 s gating block
        segment = max(self.segment or 0, int(0.5 * self.sample_rate)) if self.segment else None
        x, y, names = make_pretext_set(refs, self.sample_rate, cfg.pretext_clips, segment or 2 * self.sample_rate,
                                       cfg.pretext_families, cfg.pretext_buckets, cfg.seed,
                                       progress=cfg.progress and self.d.main)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            clf = PretextClassifier(self.metric, len(names)).to(self.d.device)
        head_params = [p for n, p in self.metric.named_parameters() if not n.startswith(("convs", "norms"))]
        for p in head_params:  # unused by the pretext forward: keep DDP from waiting on them
            p.requires_grad_(False)
        model = _wrap(clf, self.d)
        opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=cfg.lr * 10)
        scaler = torch.amp.GradScaler("cuda", enabled=self.d.device.type == "cuda" and cfg.amp)
        accuracy = float("nan")
        for epoch in range(cfg.pretext_epochs):
            order = np.random.default_rng([cfg.seed, 11, epoch]).permutation(len(x)).tolist()
            mine = order[self.d.rank:: self.d.world_size]
            correct = total = 0
            self.metric.train()
            for start in tqdm(range(0, len(mine), self.per_rank_batch), desc=f"pretext {epoch + 1}",
                              disable=not (cfg.progress and self.d.main), leave=False):
                idx = mine[start: start + self.per_rank_batch]
                xb, yb = x[idx].to(self.d.device), y[idx].to(self.d.device)
                with _autocast(self.d, cfg):
                    logits = model(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                correct += int((logits.argmax(-1) == yb).sum())
                total += len(idx)
            correct, total = _all_sum([correct, total], self.d)
            accuracy = correct / max(total, 1)
        for p in head_params:
            p.requires_grad_(True)
        return {"pretext_train_accuracy": accuracy, "pretext_classes": len(names), "pretext_clips": len(x)}

    @torch.no_grad()
    def _init_head(self) -> None:
        """Centre the head on the median log distance of the first training batches.

        A fresh network's distances sit at an arbitrary scale; starting the threshold there
        saves the first epochs from merely finding it. Same value on every rank (all-reduce).
        """
        self.metric.eval()
        logs, count = 0.0, 0
        for k, batch in enumerate(self._loader(self.train_set, True, 0)):
            if k == 4:
                break
            if batch is not None:
                d_ = self.metric(batch[0].to(self.d.device), batch[1].to(self.d.device)).float()
                logs += float(torch.log(d_ + 1e-8).sum())
                count += len(d_)
        logs, count = _all_sum([logs, count], self.d)
        if count:
            self.metric.head_offset.fill_(logs / count)

    def _train_epoch(self, model: nn.Module, epoch: int) -> float:
        self.metric.train()
        total, count = 0.0, 0
        loader = self._loader(self.train_set, True, epoch)
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False,
                          disable=not (self.cfg.progress and self.d.main)):
            if batch is None:
                continue
            a, b, y, _ = (t.to(self.d.device) for t in batch)
            with _autocast(self.d, self.cfg):
                _, logit = model(a, b)
                loss = F.binary_cross_entropy_with_logits(logit.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.cfg.max_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(y)
            count += len(y)
        total, count = _all_sum([total, count], self.d)
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        """Metrics over ``dataset`` (every rank gets the same numbers)."""
        self.metric.eval()
        rows: dict[int, tuple[float, float, float]] = {}
        if len(dataset):
            for batch in self._loader(dataset, False, 0):
                if batch is None:
                    continue
                a, b, y, idx = batch
                with _autocast(self.d, self.cfg):
                    dist_ = self.metric(a.to(self.d.device), b.to(self.d.device))
                    logit = self.metric.judgment_logit(dist_)
                for i, dv, lv, yv in zip(idx.tolist(), dist_.float().cpu().tolist(), logit.float().cpu().tolist(), y.tolist()):
                    rows[i] = (dv, lv, yv)
        merged: dict[int, tuple] = {}
        for part in _gather(rows, self.d):
            merged.update(part)  # the sampler's wrap-around duplicates collapse here
        if not merged:
            return {"accuracy": float("nan"), "roc_auc": float("nan"), "bce": float("nan"), "n": 0}
        d_, l_, y_ = map(np.array, zip(*(merged[k] for k in sorted(merged))))
        return judgment_metrics(d_, l_, y_)

    def _write_outputs(self, epoch: int, metrics: dict[str, Any], is_best: bool) -> None:
        payload = build_payload(self.metric, training_config=self.cfg.to_dict(), seed=self.cfg.seed,
                                metrics=metrics, trained_on=self.trained_on, trainer_state=self._state(epoch))
        if self._init is not None and self._init.get("provenance"):
            # fine-tuned from a published metric: keep where its starting weights came from (and their licence)
            payload["derived_from"] = {"name": self._init.get("name"), "variant": self._init.get("variant"),
                                       "trained_on": self._init.get("trained_on"),
                                       "provenance": self._init["provenance"]}
            payload["perceptual_validity"] += (f"; initialised from {self._init.get('name')}, DPAM's "
                                               f"{self._init.get('variant')} metric trained on human JND judgments")
        save_checkpoint(payload, self.out / "last.pt")
        if is_best:
            payload.pop("trainer_state")
            save_checkpoint(payload, self.out / "best.pt")
        write_history(self.history, self.out, self.trained_on)

    def run(self) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        self.trainable = self._configure_trainable()
        head = [p for n, p in self.metric.named_parameters() if n.startswith("head_") and p.requires_grad]
        rest = [p for p in self.trainable if all(p is not h for h in head)]
        # the head has two scalars on a log-distance scale: it may move 100x faster than the network
        groups = [{"params": rest}, {"params": head, "lr": cfg.lr * 100, "weight_decay": 0.0}]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=d.device.type == "cuda" and cfg.amp)
        pretext_info: dict[str, Any] = {}
        if not self._resume():
            if cfg.regime == "pretrained" or (cfg.regime == "linear" and self._init is None):
                pretext_info = self._pretext()
            if self._init is None or self._init.get("head_fitted", True) is False:
                self._init_head()  # a converted published metric brings no jndlab judgment head
            if self.d.main:
                log.info("training on %d pairs, validating on %d (%d / %d references); %s",
                         len(self.train_pairs), len(self.val_pairs), self.train_pairs["reference"].nunique(),
                         self.val_pairs["reference"].nunique(), validity_note(self.trained_on))
        model = _wrap(PairJudge(self.metric), d)
        for epoch in range(self.start_epoch, cfg.epochs):
            if self.stopped:
                break
            started = time.perf_counter()
            train_bce = self._train_epoch(model, epoch)
            val = self.evaluate(self.val_set) if len(self.val_set) else {}
            monitored = val.get("bce", train_bce) if val and not math.isnan(val.get("bce", math.nan)) else train_bce
            is_best = monitored < self.best_bce
            if is_best:
                self.best_bce, self.bad_epochs = monitored, 0
            else:
                self.bad_epochs += 1
            self.stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
            self.history.append({"epoch": epoch + 1, "train_bce": train_bce,
                                 **{f"val_{k}": v for k, v in val.items()},
                                 "seconds": time.perf_counter() - started, **pretext_info})
            pretext_info = {}
            if d.main:
                self._write_outputs(epoch, {**self.history[-1], "best_bce": self.best_bce}, is_best)
                log.info("epoch %d: train BCE %.4f, val %s", epoch + 1, train_bce,
                         ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k != "n"))
            if d.world_size > 1:
                dist.barrier()
        return {"history": self.history, "best_bce": self.best_bce, "stopped_early": self.stopped,
                "out": str(self.out), "bad_files": dict(self.store.bad)}


def write_history(history: list[dict[str, Any]], out: Path, trained_on: str) -> None:
    """history.json (atomic) and training_curve.png."""
    from perturbations.files import atomic_path

    with atomic_path(out / "history.json") as tmp:
        tmp.write_text(json.dumps({"trained_on": trained_on, "perceptual_validity": validity_note(trained_on),
                                   "epochs": json_safe(history)}, indent=2, allow_nan=False))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_bce"] for h in history], "o-", label="train BCE")
    if any("val_bce" in h for h in history):
        ax1.plot(epochs, [h.get("val_bce", math.nan) for h in history], "s-", label="val BCE")
        ax2.plot(epochs, [h.get("val_roc_auc", math.nan) for h in history], "s-", label="val ROC-AUC")
        ax2.plot(epochs, [h.get("val_accuracy", math.nan) for h in history], "^-", label="val accuracy")
        ax2.legend()
    ax1.set_xlabel("epoch"), ax2.set_xlabel("epoch"), ax1.legend()
    fig.suptitle(f"DPAM metric ({trained_on} judgments)")
    fig.tight_layout()
    with atomic_path(out / "training_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def train(pairs: pd.DataFrame, out_dir: str | os.PathLike, cfg: TrainConfig, trained_on: str = "unknown") -> dict[str, Any]:
    return Trainer(pairs, out_dir, cfg, trained_on).run()

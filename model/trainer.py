"""Train a DPAM metric on judged pairs: regimes, validation, early stopping (resume and DDP via the runtime).

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

Processes, precision, the optimiser step, checkpoints and history come from
``model.runtime``: under ``torchrun`` it starts DDP (gloo on CPU, nccl on CUDA), and AMP
(float16) runs on CUDA unless ``amp=False``. This module holds the data, the loss and
the validation. ``batch_size`` is the *global* batch; each rank takes its share of the same seeded permutation, and every
random choice about item i comes from (seed, epoch, i), so one process and N processes
see the same global batches.

The output folder holds ``last.pt`` (with trainer state: a rerun resumes by itself),
``best.pt`` (lowest validation BCE), ``history.json`` and ``training_curve.png``.
"""

from __future__ import annotations

import dataclasses
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
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.augment import PairAugment, PairGain, PairShift, SwapAB
from model.checkpoint import build_payload, read_checkpoint, validity_note
from model.data import AudioStore, PairDataset, ShardedSampler, collate_pairs, split_by_reference
from model.metrics import judgment_metrics
from model.network import DPAMMetric
from model.runtime import Curve, Runtime, save_checkpoints, write_history

log = logging.getLogger("model.trainer")
REGIMES = ("scratch", "pretrained", "linear", "finetune")
CURVES = (
    Curve("train_bce", "train BCE"),
    Curve("val_bce", "val BCE", "s-"),
    Curve("val_roc_auc", "val ROC-AUC", "s-", panel=1),
    Curve("val_accuracy", "val accuracy", "^-", panel=1),
)


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


# -- model wrappers ----------------------------------------------------------------------------
class PairJudge(nn.Module):
    """metric + head in one forward, so DDP sees every trained parameter used."""

    def __init__(self, metric: DPAMMetric):
        super().__init__()
        self.metric = metric

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distance = self.metric(a, b)
        return distance, self.metric.judgment_logit(distance)


def _build_metric(cfg: TrainConfig, rt: Runtime) -> tuple[DPAMMetric, dict[str, Any] | None]:
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
    return rt.prepare(metric), init


# -- training ----------------------------------------------------------------------------------
class Trainer:
    """``Trainer(pairs, out_dir, cfg, trained_on).run()`` -> summary dict (see module doc)."""

    def __init__(self, pairs: pd.DataFrame, out_dir: str | os.PathLike, cfg: TrainConfig, trained_on: str = "unknown"):
        validity_note(trained_on)  # validates the value
        self.cfg, self.trained_on = cfg, trained_on
        self.out = Path(out_dir)
        self.rt = Runtime("auto" if cfg.amp else "32")
        self.out.mkdir(parents=True, exist_ok=True)
        self.metric, self._init = _build_metric(cfg, self.rt)
        self.sample_rate = self.metric.sample_rate
        self.segment = None if cfg.segment_s is None else max(1, round(cfg.segment_s * self.sample_rate))
        self.store = AudioStore(self.sample_rate)
        usable = self.store.usable(pairs)
        if usable.empty:
            raise ValueError("no judged pair has two readable audio files")
        self.train_pairs, self.val_pairs = split_by_reference(usable, cfg.val_fraction, cfg.seed)
        if cfg.batch_size % self.rt.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.rt.world_size} processes")
        self.per_rank_batch = cfg.batch_size // self.rt.world_size
        augment = PairAugment(PairGain(), PairShift(), SwapAB()) if cfg.augment else None
        self.train_set = PairDataset(self.train_pairs, self.store, self.segment, augment, cfg.seed, train=True)
        self.val_set = PairDataset(self.val_pairs, self.store, self.segment, None, cfg.seed, train=False)
        self.dropout_generator = torch.Generator(device=self.rt.device).manual_seed(cfg.seed * 1009 + self.rt.rank)
        self.metric.dropout_generator = self.dropout_generator
        self.history: list[dict[str, Any]] = []
        self.best_bce, self.bad_epochs, self.start_epoch, self.stopped = math.inf, 0, 0, False

    # parameters each regime trains
    def _configure_trainable(self) -> list[nn.Parameter]:
        frozen = self.cfg.regime == "linear"
        for p in self.metric.backbone_parameters():
            p.requires_grad_(not frozen)
        return [p for p in self.metric.parameters() if p.requires_grad]

    def _loader(self, dataset, shuffle: bool, epoch: int):
        sampler = ShardedSampler(len(dataset), self.cfg.seed, shuffle, self.rt.rank, self.rt.world_size)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, sampler=sampler, collate_fn=collate_pairs, num_workers=0
        )

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            **self.stepper.state_dict(),
            "history": self.history,
            "best_bce": self.best_bce,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "dropout_generator": self.dropout_generator.get_state(),
            "world_size": self.rt.world_size,
        }

    def _resume(self) -> bool:
        state = self.rt.resume(self.out, read_checkpoint, self.metric, self.stepper)
        if state is None:
            return False
        self.history = list(state["history"])
        self.best_bce, self.bad_epochs, self.stopped = (
            float(state["best_bce"]),
            int(state["bad_epochs"]),
            bool(state["stopped"]),
        )
        if self.rt.world_size == state.get("world_size", 1):
            self.dropout_generator.set_state(state["dropout_generator"].cpu())
        self.start_epoch = int(state["epoch"]) + 1
        if self.rt.main:
            log.info("resuming at epoch %d", self.start_epoch + 1)
        return True

    def _pretext(self) -> dict[str, Any]:
        from model.pretext import PretextClassifier, make_pretext_set

        cfg = self.cfg
        refs = [a for a in (self.store.load(p) for p in pd.unique(self.train_pairs["ref_audio"])) if a is not None]
        # BS.1770 loudness matching needs at least one 0.4 s gating block
        segment = max(self.segment or 0, int(0.5 * self.sample_rate)) if self.segment else None
        x, y, names = make_pretext_set(
            refs,
            self.sample_rate,
            cfg.pretext_clips,
            segment or 2 * self.sample_rate,
            cfg.pretext_families,
            cfg.pretext_buckets,
            cfg.seed,
            progress=cfg.progress and self.rt.main,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            clf = self.rt.prepare(PretextClassifier(self.metric, len(names)))
        head_params = [p for n, p in self.metric.named_parameters() if not n.startswith(("convs", "norms"))]
        for p in head_params:  # unused by the pretext forward: keep DDP from waiting on them
            p.requires_grad_(False)
        model = self.rt.wrap(clf)
        stepper = self.rt.stepper(torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=cfg.lr * 10))
        accuracy = float("nan")
        for epoch in range(cfg.pretext_epochs):
            order = np.random.default_rng([cfg.seed, 11, epoch]).permutation(len(x)).tolist()
            mine = order[self.rt.rank :: self.rt.world_size]
            correct = total = 0
            self.metric.train()
            for start in tqdm(
                range(0, len(mine), self.per_rank_batch),
                desc=f"pretext {epoch + 1}",
                disable=not (cfg.progress and self.rt.main),
                leave=False,
            ):
                idx = mine[start : start + self.per_rank_batch]
                xb, yb = x[idx].to(self.rt.device), y[idx].to(self.rt.device)
                with self.rt.autocast():
                    logits = model(xb)
                    loss = F.cross_entropy(logits.float(), yb)
                stepper.step(loss)
                correct += int((logits.argmax(-1) == yb).sum())
                total += len(idx)
            correct_all, total_all = self.rt.all_sum([correct, total])
            accuracy = correct_all / max(total_all, 1)
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
                d_ = self.metric(batch[0].to(self.rt.device), batch[1].to(self.rt.device)).float()
                logs += float(torch.log(d_ + 1e-8).sum())
                count += len(d_)
        logs_all, count_all = self.rt.all_sum([logs, count])
        if count_all:
            self.metric.head_offset.fill_(logs_all / count_all)

    def _train_epoch(self, model: nn.Module, epoch: int) -> float:
        self.metric.train()
        total, count = 0.0, 0
        loader = self._loader(self.train_set, True, epoch)
        for batch in tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=not (self.cfg.progress and self.rt.main),
        ):
            if batch is None:
                continue
            a, b, y, _ = (t.to(self.rt.device) for t in batch)
            with self.rt.autocast():
                _, logit = model(a, b)
                loss = F.binary_cross_entropy_with_logits(logit.float(), y)
            self.stepper.step(loss)
            total += float(loss.detach()) * len(y)
            count += len(y)
        total_all, count_all = self.rt.all_sum([total, count])
        return total_all / max(count_all, 1)

    @torch.no_grad()
    def evaluate(self, dataset: PairDataset) -> dict[str, float]:
        """``{"accuracy", "roc_auc", "bce", "n"}`` of the metric over ``dataset`` (``model.metrics.
        judgment_metrics``: accuracy of the head's logit > 0, ROC-AUC of the distance, mean BCE in
        nats, ``n`` pairs); NaN and ``n = 0`` for an empty set. Each rank scores its shard and
        every rank gets the same numbers. Raises what a collective raises when a rank fails."""
        self.metric.eval()
        rows: dict[int, tuple[float, float, float]] = {}
        if len(dataset):
            for batch in self._loader(dataset, False, 0):
                if batch is None:
                    continue
                a, b, y, idx = batch
                with self.rt.autocast():
                    dist_ = self.metric(a.to(self.rt.device), b.to(self.rt.device))
                    logit = self.metric.judgment_logit(dist_)
                for i, dv, lv, yv in zip(
                    idx.tolist(), dist_.float().cpu().tolist(), logit.float().cpu().tolist(), y.tolist()
                ):
                    rows[i] = (dv, lv, yv)
        merged: dict[int, tuple] = {}
        for part in self.rt.gather(rows):
            merged.update(part)  # the sampler's wrap-around duplicates collapse here
        if not merged:
            return {"accuracy": float("nan"), "roc_auc": float("nan"), "bce": float("nan"), "n": 0}
        d_, l_, y_ = map(np.array, zip(*(merged[k] for k in sorted(merged))))
        return judgment_metrics(d_, l_, y_)

    def _write_outputs(self, epoch: int, metrics: dict[str, Any], is_best: bool) -> None:
        payload = build_payload(
            self.metric,
            training_config=self.cfg.to_dict(),
            seed=self.cfg.seed,
            metrics=metrics,
            trained_on=self.trained_on,
            trainer_state=self._state(epoch),
        )
        if self._init is not None and self._init.get("provenance"):
            # fine-tuned from a published metric: keep where its starting weights came from (and their licence)
            payload["derived_from"] = {
                "name": self._init.get("name"),
                "variant": self._init.get("variant"),
                "trained_on": self._init.get("trained_on"),
                "provenance": self._init["provenance"],
            }
            payload["perceptual_validity"] += (
                f"; initialised from {self._init.get('name')}, DPAM's "
                f"{self._init.get('variant')} metric trained on human JND judgments"
            )
        save_checkpoints(self.out, payload, best=is_best)
        write_history(
            self.out,
            {
                "trained_on": self.trained_on,
                "perceptual_validity": validity_note(self.trained_on),
                "epochs": self.history,
            },
            self.history,
            x="epoch",
            curves=CURVES,
            title=f"DPAM metric ({self.trained_on} judgments)",
        )

    def run(self) -> dict[str, Any]:
        """Train (resuming from ``OUT/last.pt`` when there) and return ``{"history", "best_bce",
        "stopped_early", "out", "bad_files"}``: one history entry per epoch (``train_bce``,
        ``val_*``, ``seconds``), the lowest monitored BCE, whether patience stopped it, the
        folder, and the audio files that could not be read (path -> reason).

        Raises ``ValueError`` when ``last.pt`` has no trainer state."""
        cfg, rt = self.cfg, self.rt
        self.trainable = self._configure_trainable()
        head = [p for n, p in self.metric.named_parameters() if n.startswith("head_") and p.requires_grad]
        rest = [p for p in self.trainable if all(p is not h for h in head)]
        # the head has two scalars on a log-distance scale: it may move 100x faster than the network
        groups: list[dict[str, Any]] = [{"params": rest}, {"params": head, "lr": cfg.lr * 100, "weight_decay": 0.0}]
        optimizer: torch.optim.Optimizer
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stepper = rt.stepper(optimizer, self.trainable, cfg.max_grad_norm)
        pretext_info: dict[str, Any] = {}
        if not self._resume():
            if cfg.regime == "pretrained" or (cfg.regime == "linear" and self._init is None):
                pretext_info = self._pretext()
            if self._init is None or self._init.get("head_fitted", True) is False:
                self._init_head()  # a converted published metric brings no jndlab judgment head
            if rt.main:
                log.info(
                    "training on %d pairs, validating on %d (%d / %d references); %s",
                    len(self.train_pairs),
                    len(self.val_pairs),
                    self.train_pairs["reference"].nunique(),
                    self.val_pairs["reference"].nunique(),
                    validity_note(self.trained_on),
                )
        model = rt.wrap(PairJudge(self.metric))
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
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "train_bce": train_bce,
                    **{f"val_{k}": v for k, v in val.items()},
                    "seconds": time.perf_counter() - started,
                    **pretext_info,
                }
            )
            pretext_info = {}
            if rt.main:
                self._write_outputs(epoch, {**self.history[-1], "best_bce": self.best_bce}, is_best)
                log.info(
                    "epoch %d: train BCE %.4f, val %s",
                    epoch + 1,
                    train_bce,
                    ", ".join(f"{k} {v:.4f}" for k, v in val.items() if k != "n"),
                )
            rt.barrier()
        return {
            "history": self.history,
            "best_bce": self.best_bce,
            "stopped_early": self.stopped,
            "out": str(self.out),
            "bad_files": dict(self.store.bad),
        }


def train(
    pairs: pd.DataFrame, out_dir: str | os.PathLike, cfg: TrainConfig, trained_on: str = "unknown"
) -> dict[str, Any]:
    """Train a metric on ``pairs`` (``model.data`` frame: one judged pair a row, audio paths and
    a 0/1 ``label``) into ``out_dir``; returns ``Trainer.run()``'s summary.

    ``trained_on``: ``"human"``, ``"simulated"``, ``"mixed"`` or ``"unknown"`` (recorded in every
    checkpoint). Raises ``ValueError`` for another ``trained_on``, when no pair has two
    readable audio files, when the global batch does not divide among the processes, or
    when ``out_dir/last.pt`` holds no trainer state; ``FileNotFoundError`` for a missing
    ``init_checkpoint``."""
    return Trainer(pairs, out_dir, cfg, trained_on).run()

"""Train an enhancer: paired or synthesised data, any loss spec, CPU/CUDA+AMP, DDP, resume.

Like ``model.trainer``: under ``torchrun`` the environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT) selects DDP (gloo on CPU, nccl on CUDA, batch-norm synchronised on
CUDA). ``batch_size`` is global. Step s of epoch e takes the items
``perm_e[s·B : (s+1)·B]`` (wrapping) of the permutation ``default_rng([seed, 0, e])``,
rank r takes every world_size-th of them, and every random choice about item i comes
from (seed, epoch, i): one process and N processes see the same global batches, and a
resumed run continues exactly where the first stopped (even mid-epoch).

The budget is ``steps`` or ``epochs``; ``eval_every`` and ``sample_every`` count in the
same unit. At each evaluation the main process computes the loss terms and SI-SDR on
up to ``val_files`` held-out files, appends to ``history.json`` (and redraws
``training_curve.png``), and writes ``last.pt`` (with trainer state: a rerun resumes by
itself) and ``best.pt`` (lowest held-out loss), atomically. At each sample point it
writes ``samples/<step>/<file>.wav`` (enhanced held-out clips) and a spectrogram PNG of
noisy / enhanced / clean, with the inputs once in ``samples/inputs/``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from perturbations.provenance import json_safe
from se.checkpoint import build_payload, read_checkpoint, save_checkpoint
from se.data import (HELDOUT_CSV, NoiseSpec, PairedDataset, SyntheticDataset, check_heldout, exclude_heldout,
                     find_pair_dirs,
                     match_pairs, read_clip, split_clean_corpus, write_heldout)
from se.losses import MetricLoss, build_loss, parse_loss_spec
from se.networks import build_network
from se.scores import si_sdr_db

log = logging.getLogger("se.trainer")


@dataclass
class TrainConfig:
    out: str = "runs/se"
    loss: str = "l1:1"
    metric_checkpoint: str | None = None
    network: str = "can"
    network_config: dict[str, Any] = field(default_factory=dict)
    # start from this enhancer checkpoint or shipped model (e.g. "dpam-se"): its network and
    # config replace ``network`` / ``network_config``, its weights the random init (fine-tuning)
    init_checkpoint: str | None = None
    # data: --clean + --noise-dir (synthesis) or --noisy + --clean (paired folders)
    clean_dir: str | None = None
    noise_dir: str | None = None
    noisy_dir: str | None = None
    heldout_dir: str | None = None  # synthesis: reuse this held-out set (else OUT/heldout)
    snr_db: tuple[float, float] = (-5.0, 20.0)
    heldout_fraction: float = 0.1
    heldout_max_files: int = 100
    heldout_max_s: float | None = 10.0
    # budget and schedule
    steps: int | None = None
    epochs: int | None = None  # neither: 10 epochs
    batch_size: int = 8  # global, over all processes
    lr: float = 3e-4
    segment_s: float | None = 1.0  # random crop per item; None: whole clips (needs equal lengths)
    max_grad_norm: float = 10.0
    seed: int = 0
    eval_every: int | None = None  # in steps or epochs (the budget's unit); default: sample_every
    sample_every: int = 1
    sample_files: int = 3
    val_files: int = 8
    amp: bool = True  # CUDA only
    progress: bool = True

    def __post_init__(self):
        parse_loss_spec(self.loss)  # fail early with the parser's message
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give --steps or --epochs, not both")
        if self.steps is None and self.epochs is None:
            self.epochs = 10
        if (self.steps is not None and self.steps < 1) or (self.epochs is not None and self.epochs < 1):
            raise ValueError("steps / epochs must be at least 1")
        if self.batch_size < 1 or self.sample_every < 1 or (self.eval_every is not None and self.eval_every < 1):
            raise ValueError("batch_size, sample_every and eval_every must be at least 1")
        if self.clean_dir is None:
            raise ValueError("training data needed: --clean DIR with --noise-dir DIR, or --noisy DIR --clean DIR")
        if "metric" in dict(parse_loss_spec(self.loss)) and not self.metric_checkpoint:
            raise ValueError("the loss spec uses 'metric': give --metric CKPT")
        self.snr_db = tuple(float(v) for v in self.snr_db)
        if self.eval_every is None:
            self.eval_every = self.sample_every

    @property
    def unit(self) -> str:
        return "step" if self.steps is not None else "epoch"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["snr_db"] = list(self.snr_db)
        return out


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _all_mean(values: list[float], world: int, device: torch.device) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return (t / world).tolist()


class Trainer:
    """``Trainer(cfg).run()`` -> summary dict (see the module doc)."""

    def __init__(self, cfg: TrainConfig):
        from model.trainer import setup_distributed

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.d = setup_distributed()
        if cfg.batch_size % self.d.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.d.world_size} processes")
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg.init_checkpoint:
            from se.checkpoint import rebuild

            init = read_checkpoint(cfg.init_checkpoint)
            cfg.network, cfg.network_config = init["network"], dict(init["network_config"])
            self.network = rebuild(init)
            if self.d.main:
                log.info("starting from %s (network %s)", cfg.init_checkpoint, cfg.network)
        else:
            # weight init draws from torch's generator: fork it so the seed stays local to this call
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.network = build_network(cfg.network, **cfg.network_config)
        self.sample_rate = int(self.network.sample_rate)
        self.segment = None if cfg.segment_s is None else max(1, int(round(cfg.segment_s * self.sample_rate)))
        self._build_data()
        if self.d.device.type == "cuda" and self.d.world_size > 1:
            self.network = nn.SyncBatchNorm.convert_sync_batchnorm(self.network)
        self.network.to(self.d.device)
        self.loss = build_loss(cfg.loss, sample_rate=self.sample_rate, metric_checkpoint=cfg.metric_checkpoint,
                               device=self.d.device)
        self.val_metric = None  # the metric as a validation score, also when it is not in the loss
        if cfg.metric_checkpoint:
            self.val_metric = self.loss.losses["metric"] if "metric" in self.loss.losses else \
                MetricLoss(cfg.metric_checkpoint, self.sample_rate, self.d.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.d.device.type == "cuda" and cfg.amp)
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        self.history: list[dict[str, Any]] = []
        self.step, self.best_val = 0, math.inf

    # -- data ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        cfg = self.cfg
        if cfg.noisy_dir is not None:
            pairs = match_pairs(cfg.noisy_dir, cfg.clean_dir)
            order = np.random.default_rng([cfg.seed, 3]).permutation(len(pairs))
            n_val = min(cfg.heldout_max_files, int(round(cfg.heldout_fraction * len(pairs))))
            n_val = max(1, n_val) if cfg.heldout_fraction > 0 and len(pairs) > 1 else n_val
            self.val_pairs = [pairs[i] for i in sorted(order[:n_val])]
            self.train_set = PairedDataset([pairs[i] for i in sorted(order[n_val:])], self.sample_rate,
                                           self.segment, cfg.seed)
            if self.d.main:
                (self.out / "heldout_files.txt").write_text("".join(f"{p.name}\n" for p in self.val_pairs))
            return
        if cfg.noise_dir is None:
            log.info("no --noise-dir: synthetic coloured noises only")
        noise = NoiseSpec(cfg.snr_db, cfg.noise_dir)
        train_paths, held_paths, held_ids = split_clean_corpus(cfg.clean_dir, cfg.heldout_fraction, cfg.seed,
                                                               cfg.heldout_max_files)
        heldout = Path(cfg.heldout_dir) if cfg.heldout_dir else self.out / "heldout"
        if self.d.main:
            if (heldout / HELDOUT_CSV).is_file():
                changed = check_heldout(heldout)
                if changed:
                    raise ValueError(f"{heldout}: {len(changed)} file(s) differ from {HELDOUT_CSV} (e.g. {changed[0]})")
            elif held_paths:
                write_heldout(held_paths, held_ids, heldout, noise, self.sample_rate, cfg.seed, cfg.heldout_max_s)
        if self.d.world_size > 1:
            dist.barrier()
        if (heldout / HELDOUT_CSV).is_file():
            # the held-out set defines the split: its clean clips never reach training, also when
            # it was made separately (se make-heldout) with another fraction or seed
            train_paths = exclude_heldout(cfg.clean_dir, heldout)
        self.train_set = SyntheticDataset(train_paths, self.sample_rate, self.segment, noise, cfg.seed)
        self.heldout_dir = heldout
        self.val_pairs = match_pairs(*find_pair_dirs(heldout)) if (heldout / HELDOUT_CSV).is_file() else []

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, size = len(self.train_set), self.cfg.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.cfg.seed, 0, epoch]).permutation(n)
        idx = [int(perm[(k * size + j) % n]) for j in range(size)][self.d.rank:: self.d.world_size]
        items = [self.train_set.item(i, epoch) for i in idx]
        noisy = torch.from_numpy(np.stack([a for a, _ in items])).to(self.d.device)
        clean = torch.from_numpy(np.stack([b for _, b in items])).to(self.d.device)
        return noisy, clean

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "history": self.history, "best_val": self.best_val, "world_size": self.d.world_size}

    def _resume(self) -> bool:
        last = self.out / "last.pt"
        if not last.is_file():
            return False
        payload = read_checkpoint(last)
        state = payload.get("trainer_state")
        if state is None:
            raise ValueError(f"{last}: has no trainer state to resume from; use a fresh --out folder")
        if payload.get("loss_spec") != self.loss.spec or payload.get("network") != self.cfg.network:
            raise ValueError(f"{last}: was trained with network {payload.get('network')!r} and loss "
                             f"{payload.get('loss_spec')!r}, not {self.cfg.network!r} / {self.loss.spec!r}; "
                             "use a fresh --out folder")
        self.network.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        self.step, self.best_val = int(state["step"]), float(state["best_val"])
        if self.d.main:
            log.info("resuming from %s at step %d", last, self.step)
        return True

    def _payload(self, metrics: dict[str, Any], with_state: bool) -> dict[str, Any]:
        metric_info = self.val_metric.info if self.val_metric is not None else None
        return build_payload(self.network, loss_spec=self.loss.spec, metric=metric_info,
                             training_config=self.cfg.to_dict(), seed=self.cfg.seed, metrics=metrics,
                             trainer_state=self._state() if with_state else None)

    # -- evaluation and samples ---------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        self.network.eval()
        sums: dict[str, float] = {}
        pairs = self.val_pairs[: self.cfg.val_files]
        for pair in pairs:
            noisy = torch.from_numpy(np.array(read_clip(pair.noisy, self.sample_rate))).to(self.d.device)[None]
            clean = torch.from_numpy(np.array(read_clip(pair.clean, self.sample_rate))).to(self.d.device)[None]
            with _autocast(self.d.device, self.cfg.amp):
                est = self.network(noisy).float()
                total, parts = self.loss(est, clean)
            values = {"loss": float(total), **{f"loss_{k}": v for k, v in parts.items()},
                      "si_sdr_db": si_sdr_db(clean[0].cpu().numpy(), est[0].cpu().numpy()),
                      "si_sdr_db_noisy": si_sdr_db(clean[0].cpu().numpy(), noisy[0].cpu().numpy())}
            if self.val_metric is not None:
                values["metric"] = float(self.val_metric(est, clean))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
        self.network.train()
        return {k: v / len(pairs) for k, v in sums.items()}

    @torch.no_grad()
    def write_samples(self, tag: str) -> Path:
        from perturbations.audio import save_audio
        from se.plots import spectrogram_png

        folder = self.out / "samples" / tag
        self.network.eval()
        for pair in self.val_pairs[: self.cfg.sample_files]:
            noisy = np.array(read_clip(pair.noisy, self.sample_rate))
            clean = np.array(read_clip(pair.clean, self.sample_rate))
            est = self.network(torch.from_numpy(noisy).to(self.d.device)[None])[0].float().cpu().numpy()
            stem = Path(pair.name).stem
            inputs = self.out / "samples" / "inputs"
            if not (inputs / f"{stem}_clean.wav").is_file():
                save_audio(inputs / f"{stem}_noisy.wav", noisy, self.sample_rate)
                save_audio(inputs / f"{stem}_clean.wav", clean, self.sample_rate)
            save_audio(folder / f"{stem}.wav", est, self.sample_rate)
            spectrogram_png(folder / f"{stem}.png", [("noisy", noisy), (f"enhanced ({tag})", est), ("clean", clean)],
                            self.sample_rate)
        self.network.train()
        return folder

    def _is_point(self, step: int, every: int) -> bool:
        if step == self.total_steps:
            return True
        if self.cfg.unit == "step":
            return step % every == 0
        return step % self.steps_per_epoch == 0 and (step // self.steps_per_epoch) % every == 0

    def _tag(self, step: int) -> str:
        if self.cfg.unit == "epoch" and step % self.steps_per_epoch == 0:
            return f"epoch{step // self.steps_per_epoch:04d}"
        return f"step{step:07d}"

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        self._resume()
        if d.main and self.step == 0:
            metric_note = f"; metric: {self.val_metric.info['trained_on']} ({self.val_metric.info['perceptual_validity']})" \
                if self.val_metric is not None else ""
            log.info("training %s on %d clips, %d held-out; loss %s; %d steps of %d%s", cfg.network,
                     len(self.train_set), len(self.val_pairs), self.loss.spec, self.total_steps, cfg.batch_size,
                     metric_note)
        model = self.network if d.world_size == 1 else nn.parallel.DistributedDataParallel(
            self.network, device_ids=[d.device] if d.device.type == "cuda" else None)
        self.network.train()
        self.loss.train()
        running: dict[str, float] = {}
        since, started = 0, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (cfg.progress and d.main))
        while self.step < self.total_steps:
            noisy, clean = self._batch(self.step)
            with _autocast(d.device, cfg.amp):
                est = model(noisy)
                total, parts = self.loss(est.float(), clean)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if cfg.max_grad_norm > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            for k, v in {"loss": float(total.detach()), **{f"loss_{k}": v for k, v in parts.items()}}.items():
                running[k] = running.get(k, 0.0) + v
            since += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
            if self._is_point(self.step, cfg.eval_every) or self._is_point(self.step, cfg.sample_every):
                keys = sorted(running)
                means = _all_mean([running[k] / since for k in keys], d.world_size, d.device)
                entry = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                         **{f"train_{k}": v for k, v in zip(keys, means)}}
                running, since = {}, 0
                if d.main:
                    self._report(entry, started)
                    started = time.perf_counter()
                if d.world_size > 1:
                    dist.barrier()
        bar.close()
        return {"history": self.history, "best_val_loss": self.best_val, "steps": self.step, "out": str(self.out)}

    def _report(self, entry: dict[str, Any], started: float) -> None:
        val = self.validate() if self._is_point(self.step, self.cfg.eval_every) else {}
        entry.update({f"val_{k}": v for k, v in val.items()})
        entry["seconds"] = time.perf_counter() - started
        self.history.append(entry)
        is_best = "val_loss" in entry and entry["val_loss"] < self.best_val
        if is_best:
            self.best_val = entry["val_loss"]
        save_checkpoint(self._payload(entry, with_state=True), self.out / "last.pt")
        if is_best or (not self.val_pairs and self.step == self.total_steps):
            save_checkpoint(self._payload(entry, with_state=False), self.out / "best.pt")
        write_history(self.history, self.out, self.loss.spec,
                      self.val_metric.info if self.val_metric is not None else None)
        if self._is_point(self.step, self.cfg.sample_every) and self.val_pairs:
            self.write_samples(self._tag(self.step))
        log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in entry.items()
                                                     if k.startswith(("train_loss", "val_")) and v is not None))


def write_history(history: list[dict[str, Any]], out: Path, loss_spec: str, metric: dict | None) -> None:
    """history.json (atomic) and training_curve.png."""
    from perturbations.files import atomic_path
    from se.plots import training_curve_png

    with atomic_path(out / "history.json") as tmp:
        tmp.write_text(json.dumps({"loss_spec": loss_spec, "metric": metric, "entries": json_safe(history)},
                                  indent=2, allow_nan=False))
    training_curve_png(out / "training_curve.png", history, loss_spec)


def train(cfg: TrainConfig) -> dict[str, Any]:
    return Trainer(cfg).run()

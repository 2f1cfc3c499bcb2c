"""Train an enhancer: paired or synthesised data, any loss spec, CPU/CUDA+AMP, DDP, resume.

Processes, precision, the optimiser step, checkpoints and history come from
``model.runtime``, as for ``model.trainer``: under ``torchrun`` DDP (gloo on CPU, nccl on
CUDA, batch-norm synchronised on CUDA), float16 AMP on CUDA unless ``amp=False``; this
module holds the data, the loss and the validation. ``batch_size`` is global. Step s of epoch e takes the items
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

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from model.runtime import Curve, Runtime, save_checkpoints, write_history
from se.checkpoint import build_payload, read_checkpoint
from se.data import (
    HELDOUT_CSV,
    NoiseSpec,
    PairedDataset,
    SyntheticDataset,
    check_heldout,
    exclude_heldout,
    find_pair_dirs,
    match_pairs,
    read_clip,
    split_clean_corpus,
    write_heldout,
)
from se.losses import MetricLoss, build_loss, parse_loss_spec
from se.networks import build_network
from se.scores import si_sdr_db

log = logging.getLogger("se.trainer")
T = TypeVar("T")
CURVES = (
    Curve("train_loss", "train loss"),
    Curve("val_loss", "held-out loss", "s-"),
    Curve("val_si_sdr_db", "enhanced", "s-", panel=1),
    Curve("val_si_sdr_db_noisy", "noisy", "--", panel=1),
)


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


def _filled(value: T | None, name: str) -> T:
    """A ``TrainConfig`` field that ``__post_init__`` fills in or refuses to leave unset."""
    if value is None:
        raise ValueError(f"TrainConfig.{name} is unset (a config changed after it was checked?)")
    return value


class Trainer:
    """``Trainer(cfg).run()`` -> summary dict (see the module doc).

    Raises:
        ValueError: ``batch_size`` not divisible by the number of processes, training folders
            that do not pair up or leave nothing to train on (``se.data.PairError`` among them),
            or a held-out set whose files differ from its list.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.rt = Runtime("auto" if cfg.amp else "32")
        if cfg.batch_size % self.rt.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {self.rt.world_size} processes")
        if self.rt.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if cfg.init_checkpoint:
            from se.checkpoint import rebuild

            init = read_checkpoint(cfg.init_checkpoint)
            cfg.network, cfg.network_config = init["network"], dict(init["network_config"])
            self.network = rebuild(init)
            if self.rt.main:
                log.info("starting from %s (network %s)", cfg.init_checkpoint, cfg.network)
        else:
            # weight init draws from torch's generator: fork it so the seed stays local to this call
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.network = build_network(cfg.network, **cfg.network_config)
        self.sample_rate = int(self.network.sample_rate)
        self.segment = None if cfg.segment_s is None else max(1, round(cfg.segment_s * self.sample_rate))
        self._build_data()
        self.network = self.rt.prepare(self.network, sync_batchnorm=True)
        self.loss = build_loss(
            cfg.loss, sample_rate=self.sample_rate, metric_checkpoint=cfg.metric_checkpoint, device=self.rt.device
        )
        self.val_metric: MetricLoss | None = None  # the metric as a validation score, also when not in the loss
        if cfg.metric_checkpoint:
            self.val_metric = self.loss.metric_loss
            if self.val_metric is None:
                self.val_metric = MetricLoss(cfg.metric_checkpoint, self.sample_rate, self.rt.device)
        self.stepper = self.rt.stepper(
            torch.optim.Adam(self.network.parameters(), lr=cfg.lr), max_grad_norm=cfg.max_grad_norm
        )
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.total_steps = cfg.steps if cfg.steps is not None else _filled(cfg.epochs, "epochs") * self.steps_per_epoch
        self.eval_every = _filled(cfg.eval_every, "eval_every")
        self.history: list[dict[str, Any]] = []
        self.step, self.best_val = 0, math.inf

    # -- data ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        cfg = self.cfg
        clean_dir = _filled(cfg.clean_dir, "clean_dir")
        self.train_set: PairedDataset | SyntheticDataset
        if cfg.noisy_dir is not None:
            pairs = match_pairs(cfg.noisy_dir, clean_dir)
            order = np.random.default_rng([cfg.seed, 3]).permutation(len(pairs))
            n_val = min(cfg.heldout_max_files, round(cfg.heldout_fraction * len(pairs)))
            n_val = max(1, n_val) if cfg.heldout_fraction > 0 and len(pairs) > 1 else n_val
            self.val_pairs = [pairs[i] for i in sorted(order[:n_val])]
            self.train_set = PairedDataset(
                [pairs[i] for i in sorted(order[n_val:])], self.sample_rate, self.segment, cfg.seed
            )
            if self.rt.main:
                (self.out / "heldout_files.txt").write_text("".join(f"{p.name}\n" for p in self.val_pairs))
            return
        if cfg.noise_dir is None:
            log.info("no --noise-dir: synthetic coloured noises only")
        noise = NoiseSpec(cfg.snr_db, cfg.noise_dir)
        train_paths, held_paths, held_ids = split_clean_corpus(
            clean_dir, cfg.heldout_fraction, cfg.seed, cfg.heldout_max_files
        )
        heldout = Path(cfg.heldout_dir) if cfg.heldout_dir else self.out / "heldout"
        if self.rt.main:
            if (heldout / HELDOUT_CSV).is_file():
                changed = check_heldout(heldout)
                if changed:
                    raise ValueError(f"{heldout}: {len(changed)} file(s) differ from {HELDOUT_CSV} (e.g. {changed[0]})")
            elif held_paths:
                write_heldout(held_paths, held_ids, heldout, noise, self.sample_rate, cfg.seed, cfg.heldout_max_s)
        self.rt.barrier()
        if (heldout / HELDOUT_CSV).is_file():
            # the held-out set defines the split: its clean clips never reach training, also when
            # it was made separately (se make-heldout) with another fraction or seed
            train_paths = exclude_heldout(clean_dir, heldout)
        self.train_set = SyntheticDataset(train_paths, self.sample_rate, self.segment, noise, cfg.seed)
        self.heldout_dir = heldout
        self.val_pairs = match_pairs(*find_pair_dirs(heldout)) if (heldout / HELDOUT_CSV).is_file() else []

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, size = len(self.train_set), self.cfg.batch_size
        epoch, k = divmod(step, self.steps_per_epoch)
        perm = np.random.default_rng([self.cfg.seed, 0, epoch]).permutation(n)
        idx = [int(perm[(k * size + j) % n]) for j in range(size)][self.rt.rank :: self.rt.world_size]
        items = [self.train_set.item(i, epoch) for i in idx]
        noisy = torch.from_numpy(np.stack([a for a, _ in items])).to(self.rt.device)
        clean = torch.from_numpy(np.stack([b for _, b in items])).to(self.rt.device)
        return noisy, clean

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            **self.stepper.state_dict(),
            "history": self.history,
            "best_val": self.best_val,
            "world_size": self.rt.world_size,
        }

    def _same_run(self, payload: dict[str, Any]) -> None:
        if payload.get("loss_spec") != self.loss.spec or payload.get("network") != self.cfg.network:
            raise ValueError(
                f"{self.out / 'last.pt'}: was trained with network {payload.get('network')!r} and loss "
                f"{payload.get('loss_spec')!r}, not {self.cfg.network!r} / {self.loss.spec!r}; "
                "use a fresh --out folder"
            )

    def _resume(self) -> bool:
        state = self.rt.resume(self.out, read_checkpoint, self.network, self.stepper, check=self._same_run)
        if state is None:
            return False
        self.history = list(state["history"])
        self.step, self.best_val = int(state["step"]), float(state["best_val"])
        if self.rt.main:
            log.info("resuming at step %d", self.step)
        return True

    def _metric_info(self) -> dict[str, Any] | None:
        return self.val_metric.info if self.val_metric is not None else None

    def _payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return build_payload(
            self.network,
            loss_spec=self.loss.spec,
            metric=self._metric_info(),
            training_config=self.cfg.to_dict(),
            seed=self.cfg.seed,
            metrics=metrics,
            trainer_state=self._state(),
        )

    # -- evaluation and samples ---------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Means over the first ``val_files`` held-out pairs, each enhanced whole: ``loss`` and
        ``loss_<term>`` (the loss spec's terms), ``si_sdr_db`` of the enhanced and
        ``si_sdr_db_noisy`` of the noisy input (dB, against the clean), and ``metric`` (the
        learned metric's distance) when one is given; ``{}`` without held-out pairs."""
        if not self.val_pairs:
            return {}
        self.network.eval()
        sums: dict[str, float] = {}
        pairs = self.val_pairs[: self.cfg.val_files]
        for pair in pairs:
            noisy = torch.from_numpy(np.array(read_clip(pair.noisy, self.sample_rate))).to(self.rt.device)[None]
            clean = torch.from_numpy(np.array(read_clip(pair.clean, self.sample_rate))).to(self.rt.device)[None]
            with self.rt.autocast():
                est = self.network(noisy).float()
                total, parts = self.loss(est, clean)
            values = {
                "loss": float(total),
                **{f"loss_{k}": v for k, v in parts.items()},
                "si_sdr_db": si_sdr_db(clean[0].cpu().numpy(), est[0].cpu().numpy()),
                "si_sdr_db_noisy": si_sdr_db(clean[0].cpu().numpy(), noisy[0].cpu().numpy()),
            }
            if self.val_metric is not None:
                values["metric"] = float(self.val_metric(est, clean))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
        self.network.train()
        return {k: v / len(pairs) for k, v in sums.items()}

    @torch.no_grad()
    def write_samples(self, tag: str) -> Path:
        """Enhance the first ``sample_files`` held-out clips into ``OUT/samples/<tag>/<name>.wav``
        (float32 at the network's rate) with a noisy / enhanced / clean spectrogram PNG each,
        and the inputs once into ``OUT/samples/inputs/``; returns the tag's folder.
        Raises ``OSError`` when a file cannot be written."""
        from perturbations.audio import save_audio
        from se.plots import spectrogram_png

        folder = self.out / "samples" / tag
        self.network.eval()
        for pair in self.val_pairs[: self.cfg.sample_files]:
            noisy = np.array(read_clip(pair.noisy, self.sample_rate))
            clean = np.array(read_clip(pair.clean, self.sample_rate))
            est = self.network(torch.from_numpy(noisy).to(self.rt.device)[None])[0].float().cpu().numpy()
            stem = Path(pair.name).stem
            inputs = self.out / "samples" / "inputs"
            if not (inputs / f"{stem}_clean.wav").is_file():
                save_audio(inputs / f"{stem}_noisy.wav", noisy, self.sample_rate)
                save_audio(inputs / f"{stem}_clean.wav", clean, self.sample_rate)
            save_audio(folder / f"{stem}.wav", est, self.sample_rate)
            spectrogram_png(
                folder / f"{stem}.png",
                [("noisy", noisy), (f"enhanced ({tag})", est), ("clean", clean)],
                self.sample_rate,
            )
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
        """Train to the budget (resuming from ``OUT/last.pt`` when there) and return ``{"history",
        "best_val_loss", "steps", "out"}``: one history entry per evaluation or sample point
        (``step``, ``epoch`` as a fraction, ``train_*`` means since the last entry, ``val_*``,
        ``seconds``). Raises ``ValueError`` when ``last.pt`` has no trainer state or was
        trained with another network or loss spec."""
        cfg, rt = self.cfg, self.rt
        self._resume()
        if rt.main and self.step == 0:
            metric_note = (
                f"; metric: {self.val_metric.info['trained_on']} ({self.val_metric.info['perceptual_validity']})"
                if self.val_metric is not None
                else ""
            )
            log.info(
                "training %s on %d clips, %d held-out; loss %s; %d steps of %d%s",
                cfg.network,
                len(self.train_set),
                len(self.val_pairs),
                self.loss.spec,
                self.total_steps,
                cfg.batch_size,
                metric_note,
            )
        model = rt.wrap(self.network)
        self.network.train()
        self.loss.train()
        running: dict[str, float] = {}
        since, started = 0, time.perf_counter()
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not (cfg.progress and rt.main)
        )
        while self.step < self.total_steps:
            noisy, clean = self._batch(self.step)
            with rt.autocast():
                est = model(noisy)
                total, parts = self.loss(est.float(), clean)
            self.stepper.step(total)
            self.step += 1
            for k, v in {"loss": float(total.detach()), **{f"loss_{k}": v for k, v in parts.items()}}.items():
                running[k] = running.get(k, 0.0) + v
            since += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
            if self._is_point(self.step, self.eval_every) or self._is_point(self.step, cfg.sample_every):
                keys = sorted(running)
                means = rt.all_mean([running[k] / since for k in keys])
                entry = {
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    **{f"train_{k}": v for k, v in zip(keys, means)},
                }
                running, since = {}, 0
                if rt.main:
                    self._report(entry, started)
                    started = time.perf_counter()
                rt.barrier()
        bar.close()
        return {"history": self.history, "best_val_loss": self.best_val, "steps": self.step, "out": str(self.out)}

    def _report(self, entry: dict[str, Any], started: float) -> None:
        val = self.validate() if self._is_point(self.step, self.eval_every) else {}
        entry.update({f"val_{k}": v for k, v in val.items()})
        entry["seconds"] = time.perf_counter() - started
        self.history.append(entry)
        is_best = "val_loss" in entry and entry["val_loss"] < self.best_val
        if is_best:
            self.best_val = entry["val_loss"]
        save_checkpoints(
            self.out, self._payload(entry), best=is_best or (not self.val_pairs and self.step == self.total_steps)
        )
        write_history(
            self.out,
            {"loss_spec": self.loss.spec, "metric": self._metric_info(), "entries": self.history},
            self.history,
            x="step",
            curves=CURVES,
            title=f"enhancer, loss {self.loss.spec}",
            right_ylabel="held-out SI-SDR (dB)",
        )
        if self._is_point(self.step, self.cfg.sample_every) and self.val_pairs:
            self.write_samples(self._tag(self.step))
        log.info(
            "step %d: %s",
            self.step,
            ", ".join(
                f"{k} {v:.4f}" for k, v in entry.items() if k.startswith(("train_loss", "val_")) and v is not None
            ),
        )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train an enhancer as ``cfg`` says into ``cfg.out``; returns ``Trainer.run()``'s summary.

    Raises ``ValueError`` for an unusable configuration or data (a held-out set whose files
    changed, clips of unequal length without a segment, an unknown network, a resume that
    does not match), ``FileNotFoundError`` for missing folders or checkpoints."""
    return Trainer(cfg).run()

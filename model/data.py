"""Judged pairs for training the metric: where they come from, how they are split and loaded.

Sources (each returns a DataFrame with the columns of ``PAIR_COLUMNS``):
- ``pairs_from_triplets(FILE, audio_root)``: DPAM-format triplet files
  (``analysis.triplets.read_triplets``);
- ``pairs_from_database(url)``: the listening-test database through the web app's own
  export (``listening_test.export.judgments_csv``); no reaching into its tables beyond
  listing experiments and their audio roots.

``split_by_reference`` keeps every pair of one reference clip on one side of the split.
``PairDataset`` crops/pads each pair to a common window and augments both sides alike;
a missing or corrupt file is logged once (naming the file and the reason) and its pairs
are skipped, so a run goes on.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import secrets
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from model.augment import PairAugment, align_pair
from perturbations.audio import AudioError, load_audio

log = logging.getLogger("model.data")

PAIR_COLUMNS = ["ref_audio", "test_audio", "label", "participant", "reference", "source"]


# -- sources ----------------------------------------------------------------------------------
def pairs_from_triplets(path: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Pairs from a DPAM triplet file; paths are joined to ``audio_root`` (default: the file's folder)."""
    from analysis.triplets import read_triplets

    path = Path(path)
    df = read_triplets(path, audio_root if audio_root is not None else path.parent)
    return pd.DataFrame({
        "ref_audio": df["ref_audio"], "test_audio": df["perturbed_audio"], "label": df["label"].astype("int64"),
        "participant": "", "reference": df["ref"], "source": [f"{path.name}:{n}" for n in df["line"]],
    }, columns=PAIR_COLUMNS)


def pairs_from_database(url: str | None = None, experiment_ids: list[int] | None = None,
                        include_screened_out: bool = False) -> tuple[pd.DataFrame, str]:
    """Main-trial judgments from the listening-test database, and what kind of listener gave them.

    ``url``: a SQLAlchemy URL; default ``DATABASE_URL`` or the web app's default SQLite path.
    Sessions that failed the headphone screening are left out unless ``include_screened_out``.
    Returns ``(pairs, trained_on)`` with trained_on ``"simulated"`` when every participant's
    platform names a simulator, ``"human"`` when none does, ``"mixed"`` otherwise.
    """
    try:
        from listening_test import create_app
        from listening_test.config import default_database_url
        from listening_test.db import db
        from listening_test.export import judgments_csv
        from listening_test.models import Experiment
    except ImportError as error:
        raise RuntimeError(f"the listening-test package is not available: {error}") from None
    from sqlalchemy import select

    url = url or os.environ.get("DATABASE_URL") or default_database_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no listening-test database at {url}")
    # The app insists on a secret; this reader signs nothing, so a throwaway one is harmless.
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": secrets.token_urlsafe(32)})
    rows, platforms = [], set()
    with app.app_context():
        experiments = db.session.execute(select(Experiment.id, Experiment.audio_root)).all()
        for exp_id, audio_root in experiments:
            if experiment_ids is not None and exp_id not in experiment_ids:
                continue
            text = "".join(judgments_csv(exp_id))
            for rec in csv.DictReader(io.StringIO(text)):
                if rec["kind"] != "main" or rec["label"] not in ("0", "1"):
                    continue
                if rec["screening_passed"] == "False" and not include_screened_out:
                    continue
                if not rec["reference_path"] or not rec["test_path"]:
                    continue
                platforms.add(rec["platform"])
                rows.append({
                    "ref_audio": str(Path(audio_root) / rec["reference_path"]),
                    "test_audio": str(Path(audio_root) / rec["test_path"]),
                    "label": int(rec["label"]),
                    "participant": f"{exp_id}:{rec['participant_id']}",
                    "reference": f"{exp_id}:{rec['reference']}",
                    "source": f"db:experiment {exp_id}:trial {rec['trial_id']}",
                })
        db.engine.dispose()
    simulated = {p for p in platforms if "sim" in p.lower()}
    trained_on = "unknown" if not platforms else (
        "simulated" if simulated == platforms else "human" if not simulated else "mixed")
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), trained_on


# -- split ------------------------------------------------------------------------------------
def split_by_reference(pairs: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out whole reference clips: no reference has pairs on both sides.

    At least one reference goes to validation when there are two or more and
    ``val_fraction`` > 0. The assignment depends only on the set of references and ``seed``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    refs = sorted(pairs["reference"].unique())
    n_val = int(round(val_fraction * len(refs)))
    if val_fraction > 0 and len(refs) >= 2:
        n_val = min(max(n_val, 1), len(refs) - 1)
    order = np.random.default_rng(seed).permutation(len(refs))
    val_refs = {refs[i] for i in order[:n_val]}
    is_val = pairs["reference"].isin(val_refs)
    return pairs[~is_val].reset_index(drop=True), pairs[is_val].reset_index(drop=True)


# -- audio ------------------------------------------------------------------------------------
class AudioStore:
    """Loads clips at one sample rate, caches the most recent ones, reports each bad file once."""

    def __init__(self, sample_rate: int, cache_items: int = 256):
        self.sample_rate = int(sample_rate)
        self.cache_items = cache_items
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bad: dict[str, str] = {}

    def report(self, path: str, reason: str) -> None:
        if path not in self.bad:
            self.bad[path] = reason
            log.warning("skipping %s: %s", path, reason)

    def check(self, path: str) -> bool:
        """Cheap header check (no decode); False, reported once, when the file cannot be used."""
        if path in self.bad:
            return False
        p = Path(path)
        if not p.is_file():
            self.report(path, "file does not exist")
            return False
        try:
            info = sf.info(str(p))
        except (sf.LibsndfileError, RuntimeError, TypeError) as error:
            self.report(path, f"not readable as audio ({error})")
            return False
        if info.frames == 0:
            self.report(path, "contains no samples")
            return False
        return True

    def load(self, path: str) -> np.ndarray | None:
        if path in self.bad:
            return None
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            audio, rate = load_audio(path, mix_to_mono=True, allow_silent=True)
        except AudioError as error:
            self.report(path, error.reason)
            return None
        if rate != self.sample_rate:  # judged clips at another rate: resample, as the metric would
            import torchaudio.functional as AF

            audio = AF.resample(torch.from_numpy(audio), rate, self.sample_rate).numpy()
        if self.cache_items > 0:
            self._cache[path] = audio
            if len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
        return audio

    def usable(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """The pairs whose two files pass the header check (each bad file reported once)."""
        ok = {p: self.check(p) for p in pd.unique(pd.concat([pairs["ref_audio"], pairs["test_audio"]]))}
        keep = pairs["ref_audio"].map(ok) & pairs["test_audio"].map(ok)
        return pairs[keep.astype(bool)].reset_index(drop=True)


# -- dataset ------------------------------------------------------------------------------------
class PairDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(ref, test, label, i)`` as float32 tensors of ``segment_samples``, or None if unreadable.

    Randomness for item i in epoch e comes from ``default_rng([seed, e, i])``: the same
    item gets the same crop and augmentation whichever process or batch loads it.
    ``augment`` None and ``train`` False: a centred window, no augmentation (validation).
    """

    def __init__(self, pairs: pd.DataFrame, store: AudioStore, segment_samples: int | None,
                 augment: PairAugment | None = None, seed: int = 0, train: bool = True):
        self.pairs = pairs.reset_index(drop=True)
        self.store = store
        self.segment_samples = segment_samples
        self.augment = augment
        self.seed = int(seed)
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        row = self.pairs.iloc[i]
        a, b = self.store.load(row["ref_audio"]), self.store.load(row["test_audio"])
        if a is None or b is None:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, int(i)]) if self.train else None
        a, b = align_pair(a, b, self.segment_samples, None, rng)
        if self.train and self.augment is not None:
            a, b = self.augment(a, b, self.store.sample_rate, rng)
        return (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)),
                torch.tensor(float(row["label"])), int(i))


def collate_pairs(items):
    """Stack the readable items; None when the whole batch was unreadable."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    a, b, y, idx = zip(*items)
    return torch.stack(a), torch.stack(b), torch.stack(y), torch.tensor(idx)


class ShardedSampler(torch.utils.data.Sampler):
    """Seeded per-epoch permutation, sharded ``rank::world_size`` (as DistributedSampler).

    With per-rank batch B, step k of ``world_size`` ranks covers exactly the items that
    one process with batch B·world_size sees at step k: the global batch is the same.
    Short shards are padded by wrapping around, so every rank takes the same number of steps.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, int(seed), shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n)).tolist()
        total = -(-self.n // self.world_size) * self.world_size
        if order:
            order += (order * (total // len(order) + 1))[: total - len(order)]
        return order

    def __iter__(self):
        return iter(self._order()[self.rank:: self.world_size])

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

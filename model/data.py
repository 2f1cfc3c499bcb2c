"""Judged pairs for training the metric: where they come from, how they are split and loaded.

Sources (each returns a DataFrame with the columns of ``PAIR_COLUMNS``):
- ``pairs_from_triplets(FILE, audio_root)``: DPAM-format triplet files
  (``analysis.triplets.read_triplets``);
- ``pairs_from_database(url)``: the listening-test database through the analysis package
  (``load_judgments`` -> ``screening.included_judgments`` -> ``pairs_table``): one database
  reader for the whole project, and the same worker screening as the analysis report.

``split_by_reference`` keeps every pair of one reference clip on one side of the split.
``PairDataset`` crops/pads each pair to a common window and augments both sides alike;
a missing or corrupt file is logged once (naming the file and the reason) and its pairs
are skipped, so a run goes on.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
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
    return pd.DataFrame(
        {
            "ref_audio": df["ref_audio"],
            "test_audio": df["perturbed_audio"],
            "label": df["label"].astype("int64"),
            "participant": "",
            "reference": df["ref"],
            "source": [f"{path.name}:{n}" for n in df["line"]],
        },
        columns=PAIR_COLUMNS,
    )


def _is_simulated(client_info: str) -> bool:
    """True when a client-info JSON object says ``"simulated": true`` (the simulator's mark)."""
    import json

    if not client_info:
        return False
    try:
        info = json.loads(client_info)
    except (TypeError, ValueError):
        return False
    return isinstance(info, dict) and info.get("simulated") is True


def judged_by(judgments: pd.DataFrame) -> str:
    """Who gave ``judgments`` (the tidy table of ``analysis.judgments``): ``"simulated"`` when
    every judgment is marked simulated (in its own or its session's client info), ``"human"``
    when none is, ``"mixed"`` otherwise, ``"unknown"`` for no judgments."""
    if judgments.empty:
        return "unknown"
    marked = [
        _is_simulated(a) or _is_simulated(s) for a, s in zip(judgments["client_info"], judgments["session_client_info"])
    ]
    return "simulated" if all(marked) else "human" if not any(marked) else "mixed"


@dataclass
class DatabasePairs:
    """What ``pairs_from_database`` read: the pairs, who judged them, and the screening."""

    pairs: pd.DataFrame
    trained_on: str
    screening: pd.DataFrame  # analysis.screening.screen's per-worker table
    table: pd.DataFrame  # analysis.judgments.pairs_table of the same judgments (family, level, worker ...)
    database_url: str = ""

    @property
    def excluded(self) -> pd.DataFrame:
        return self.screening[self.screening["excluded"]]

    def screening_summary(self) -> str:
        """One line per excluded worker under a count, e.g. for the train command's printout."""
        n, ex = len(self.screening), self.excluded
        lines = [f"screening (analysis.screening, default rules): excluded {len(ex)} of {n} worker(s)"]
        lines += [f"  {r.worker}: {r.reasons}" for r in ex.itertuples(index=False)]
        return "\n".join(lines)


def pairs_from_database(url: str | None = None, experiment: str | None = None, rules=None) -> DatabasePairs:
    """Main-trial judgments from the listening-test database, after worker screening.

    The one database reader is the analysis package's: ``analysis.judgments.load_judgments``
    (``url``: a SQLAlchemy URL; default ``DATABASE_URL`` or the web app's SQLite file;
    ``experiment``: a slug or id), then ``analysis.screening.included_judgments`` with
    ``rules`` (default ``ScreeningRules()``: excluded workers, failed headphone screen,
    failed catch trials ...), then ``analysis.judgments.pairs_table``.
    ``trained_on`` is read from the kept main-trial judgments (``judged_by``).
    """
    from analysis.judgments import load_judgments, pairs_table
    from analysis.screening import ScreeningRules, included_judgments, screen

    judgments = load_judgments(url, experiment=experiment)
    screened = screen(judgments, rules or ScreeningRules())
    kept = included_judgments(judgments, screened=screened)
    main = kept[
        (kept["kind"] == "main")
        & kept["response_different"].notna()
        & kept["reference_path"].notna()
        & kept["test_path"].notna()
    ]
    table = pairs_table(main)
    pairs = pd.DataFrame(
        {
            "ref_audio": table["ref_audio"],
            "test_audio": table["test_audio"],
            "label": table["label"],
            "participant": table["worker"],
            "reference": table["reference"],
            "source": [f"db:experiment {e}:trial {t}" for e, t in zip(main["experiment"], main["trial_id"])],
        },
        columns=PAIR_COLUMNS,
    )
    return DatabasePairs(pairs, judged_by(main), screened, table, judgments.attrs.get("database_url", ""))


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

    def __init__(
        self,
        pairs: pd.DataFrame,
        store: AudioStore,
        segment_samples: int | None,
        augment: PairAugment | None = None,
        seed: int = 0,
        train: bool = True,
    ):
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
        if rng is not None and self.augment is not None:  # rng is drawn for training only
            a, b = self.augment(a, b, self.store.sample_rate, rng)
        return (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)),
            torch.tensor(float(row["label"])),
            int(i),
        )


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
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        ).tolist()
        total = -(-self.n // self.world_size) * self.world_size
        if order:
            order += (order * (total // len(order) + 1))[: total - len(order)]
        return order

    def __iter__(self):
        return iter(self._order()[self.rank :: self.world_size])

    def __len__(self) -> int:
        return -(-self.n // self.world_size)

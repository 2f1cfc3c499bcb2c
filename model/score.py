"""Scoring pairs with a trained metric: batched over many pairs (``score_pairs``), or as
one distance function beside the baselines of ``analysis.agreement`` (``learned_distance``).

Pairs are batched only with pairs of the same (common) length, so no zero padding
enters the mean over time: a pair's distance is the same alone or in a batch.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from analysis.baselines import DistanceFn, metric_distance
from model.data import AudioStore
from model.network import DPAMMetric


def learned_distance(name_or_path: str | os.PathLike, device: str | torch.device | None = "cpu") -> DistanceFn:
    """A jndlab metric as a distance ``fn(ref, test, sample_rate) -> float`` for
    ``analysis.agreement`` and the analysis report: ``model.load_metric`` wrapped by
    ``analysis.baselines.metric_distance`` (analysis scores any callable; the checkpoint
    loader lives here, with the model).

    ``name_or_path``: a shipped metric (``"dpam"``, ``"dpam-finetune"``, ``"dpam-linear"``)
    or a checkpoint. The function is named ``learned:<name_or_path>`` and carries the
    checkpoint's ``trained_on``. Raises FileNotFoundError for an unknown name or a missing
    file (``model.metric_path``).
    """
    from model import load_metric

    return metric_distance(load_metric(name_or_path, device=device), name=f"learned:{name_or_path}")


@torch.no_grad()
def score_pairs(metric: DPAMMetric, pairs: pd.DataFrame, batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """``pairs`` with a ``distance`` column (NaN where a file was unreadable; reported once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(metric.parameters()).device
    store = AudioStore(metric.sample_rate, cache_items=64)
    groups: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
    for i, row in enumerate(pairs.itertuples(index=False)):
        a, b = store.load(row.ref_audio), store.load(row.test_audio)
        if a is None or b is None:
            continue
        n = min(len(a), len(b))  # unequal lengths: crop to the shorter clip
        groups[n].append((i, a[:n], b[:n]))
    distances = np.full(len(pairs), np.nan)
    total = sum(-(-len(g) // batch_size) for g in groups.values())
    with tqdm(total=total, desc="scoring", disable=not progress, leave=False) as bar:
        for items in groups.values():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                ref = torch.from_numpy(np.stack([c[1] for c in chunk])).to(device)
                test = torch.from_numpy(np.stack([c[2] for c in chunk])).to(device)
                d = metric(ref, test).float().cpu().numpy()
                distances[[c[0] for c in chunk]] = d
                bar.update(1)
    out = pairs.copy()
    out["distance"] = distances
    return out

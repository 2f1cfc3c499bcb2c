"""The pretext task of the ``pretrained`` regime: name the perturbation family and level bucket.

DPAM pre-trained its backbone on DCASE acoustic-scene classification, which cannot be
downloaded here. Instead the perturbation engine makes labelled clips from the training
references (``perturbations.stimulus.make_stimulus``): the backbone learns features that
tell degradations and their strengths apart, which is what the metric then compares.
Only references of the training split are used, so validation references stay unseen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.augment import align_pair
from model.network import DPAMMetric

# families that need no user data folders and run in-process
DEFAULT_FAMILIES = ("noise", "eq", "lowpass", "clipping", "mulaw", "mp3")


def make_pretext_set(
    references: list[np.ndarray],
    sample_rate: int,
    num_clips: int,
    segment_samples: int,
    families: tuple[str, ...],
    n_buckets: int,
    seed: int,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``num_clips`` perturbed windows and their class (family index · n_buckets + bucket).

    Level is uniform on [0, 100]; bucket = which of ``n_buckets`` equal level ranges it falls in.
    A draw that the engine refuses (e.g. no headroom) is replaced by the next draw.
    """
    from perturbations.registry import get_family
    from perturbations.stimulus import make_stimulus

    if not references:
        raise ValueError("the pretext task needs at least one readable reference clip")
    built = [get_family(name) for name in families]
    rng = np.random.default_rng([seed, 7])  # 7: the pretext stream, apart from the trainer's
    clips: list[torch.Tensor] = []
    classes: list[int] = []
    attempts, last_error = 0, ""

    bar = tqdm(total=num_clips, desc="pretext clips", disable=not progress, leave=False)
    while len(clips) < num_clips:
        attempts += 1
        if attempts > 20 * num_clips:
            raise RuntimeError(f"the perturbation engine refused almost every pretext draw (last: {last_error})")
        ref = references[int(rng.integers(len(references)))]
        ref, _ = align_pair(ref, ref, segment_samples, None, rng)
        f = int(rng.integers(len(built)))
        level = float(rng.uniform(0.0, 100.0))
        try:
            audio, _ = make_stimulus(built[f], ref, sample_rate, level, int(rng.integers(2**31)))
        except ValueError as error:  # HeadroomError and clips the family cannot take (e.g. near-silent)
            last_error = str(error)
            continue
        clips.append(torch.from_numpy(audio))
        classes.append(f * n_buckets + min(int(level * n_buckets / 100.0), n_buckets - 1))
        bar.update(1)
    bar.close()
    names = [f"{fam}/{b}" for fam in families for b in range(n_buckets)]
    return torch.stack(clips), torch.tensor(classes), names


class PretextClassifier(nn.Module):
    """Backbone of a metric + a linear layer on its time-averaged last features."""

    def __init__(self, metric: DPAMMetric, n_classes: int):
        super().__init__()
        self.metric = metric
        self.linear = nn.Linear(metric.embedding_channels, n_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.linear(self.metric.pooled_embedding(audio))

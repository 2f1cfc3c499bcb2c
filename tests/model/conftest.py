"""Fixtures for the metric's tests: tiny judged-pair sets written to tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from perturbations.audio import save_audio
from perturbations.noises import colored_noise
from tests.conftest import tone

__all__ = ["SR", "add_noise", "tone", "train", "write_pair_set"]

SR = 16000


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    yield


def train(source, out, *options: str) -> int:
    """``python -m model train`` in this process, without progress bars: judgments from
    ``source``, a (judgments file, audio root) pair or a database URL; the run in ``out``;
    ``options``: more of its flags. Returns the command's exit code."""
    from model.__main__ import main

    if isinstance(source, str):
        judgments = ["db", "--database-url", source]
    else:
        judgments = [str(source[0]), "--audio-root", str(source[1])]
    return main(["train", "--judgments", *judgments, "--out", str(out), "--no-progress", *options])


def add_noise(ref: np.ndarray, snr_db: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    noise = colored_noise(color, len(ref), rng, sample_rate=SR)
    return (ref + noise * np.sqrt(np.mean(ref**2)) * 10 ** (-snr_db / 20)).astype(np.float32)


def write_pair_set(
    root,
    n_refs: int = 4,
    snrs=(45.0, 35.0, 10.0, 0.0),
    seconds: float = 0.5,
    threshold_db: float = 20.0,
    name: str = "triplets.txt",
):
    """References + noisy versions; label 1 ("different") below ``threshold_db`` SNR."""
    rng = np.random.default_rng(123)
    audio = root / "audio"
    lines = []
    for r in range(n_refs):
        ref = tone(r, seconds)
        save_audio(audio / f"ref{r}.wav", ref, SR)
        for k, snr in enumerate(snrs):
            color = ("white", "pink", "brown")[(r + k) % 3]
            save_audio(audio / f"r{r}_{int(snr)}.wav", add_noise(ref, snr, rng, color), SR)
            lines.append(f"ref{r}.wav\tr{r}_{int(snr)}.wav\t{int(snr < threshold_db)}\n")
    path = root / name
    path.write_text("".join(lines))
    return path, audio


@pytest.fixture
def pair_set(tmp_path):
    return write_pair_set(tmp_path)

"""PNG figures written during training: spectrograms of the enhanced samples (the training curve: ``model.runtime``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from perturbations.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)


def spectrogram_png(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    sample_rate: int,
    fft_samples: int = 512,
    hop_samples: int = 128,
) -> Path:
    """One log-magnitude spectrogram per ``(title, audio)`` panel, on a shared dB scale."""
    from scipy.signal import stft

    plt = _pyplot()
    specs = []
    for _, audio in panels:
        freqs_hz, times_s, z = stft(
            np.asarray(audio, np.float64), fs=sample_rate, nperseg=fft_samples, noverlap=fft_samples - hop_samples
        )
        specs.append((freqs_hz, times_s, 20 * np.log10(np.abs(z) + 1e-10)))
    top = max(float(s[2].max()) for s in specs)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, _), (f, t, db) in zip(axes[:, 0], panels, specs):
        mesh = ax.pcolormesh(t, f / 1000, db, vmin=top - 80, vmax=top, shading="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("s")
    fig.colorbar(mesh, ax=axes[:, 0].tolist(), label="dB")
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)

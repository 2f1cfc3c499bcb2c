"""Preview one family's ladder on one clip: every level as audio, plus a spectrogram grid.

``python -m perturbations preview REF --family F`` lets a researcher listen to and look at
the ladder before generating a whole stimulus set. The clips are made exactly as
``generate`` makes them (same reference preparation, seed derivation and writer).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from perturbations.audio import atomic_path, save_audio
from perturbations.generate import (
    DEFAULT_SAMPLE_RATE,
    DEFAULT_SEED,
    TARGET_LUFS,
    derive_seed,
    level_tag,
    parse_levels,
    prepare_reference,
    safe_id,
)

SPECTROGRAM_NAME = "spectrograms.png"
DYNAMIC_RANGE_DB = 80.0  # colour scale shared by all panels, so levels compare by eye


def preview(
    reference: str | os.PathLike,
    family: str,
    *,
    out_dir: str | os.PathLike | None = None,
    levels: Sequence[float] | int = 11,
    seed: int = DEFAULT_SEED,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    resample: bool = False,
    target_lufs: float = TARGET_LUFS,
    family_options: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``reference.wav``, one WAV per level and ``spectrograms.png`` into ``out_dir``.

    Returns the folder. Raises ``AudioError`` for an unusable reference, ``ValueError`` for
    an unknown family or bad levels.
    """
    from perturbations.registry import available_families, get_family
    from perturbations.stimulus import make_stimulus

    reference = Path(reference)
    if family not in available_families():
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(available_families())}")
    level_list = parse_levels(levels) if isinstance(levels, (int, str)) else parse_levels(list(levels))
    out = Path(out_dir) if out_dir is not None else Path(f"preview-{safe_id(reference.stem)}-{family}")
    audio, _ = prepare_reference(reference, sample_rate, resample=resample, target_lufs=target_lufs)
    family_obj = get_family(family, **(family_options or {}))
    item_id = safe_id(reference.stem)

    save_audio(out / "reference.wav", audio, sample_rate)
    panels: list[tuple[str, np.ndarray]] = [("reference", audio)]
    for level in tqdm(level_list, desc=f"preview {family}", unit="level", disable=not progress):
        seed_here = derive_seed(seed, item_id, family)
        perturbed, params = make_stimulus(family_obj, audio, sample_rate, level, seed_here)
        save_audio(out / f"{family}_{level_tag(level)}.wav", perturbed, sample_rate)
        panels.append((f"{level_tag(level)}  {_describe(params)}", np.asarray(perturbed, dtype=np.float32)))
    save_spectrogram_grid(out / SPECTROGRAM_NAME, panels, sample_rate, title=f"{family}: {reference.name}")
    return out


def _describe(params: dict[str, Any], max_items: int = 2) -> str:
    """A short label from the first numeric or text parameters, e.g. ``snr_db=12.0``."""
    parts = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            continue
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        if len(text) <= 16:
            parts.append(f"{key}={text}")
        if len(parts) == max_items:
            break
    return ", ".join(parts)


def save_spectrogram_grid(
    path: Path, panels: Sequence[tuple[str, np.ndarray]], sample_rate: int, *, title: str = ""
) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set before pyplot is imported
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    specs = []
    for _, audio in panels:
        freqs_hz, times_s, power = spectrogram(audio, fs=sample_rate, nperseg=512, noverlap=384)
        specs.append((freqs_hz, times_s, 10.0 * np.log10(power + 1e-12)))
    top_db = max(float(spec[2].max()) for spec in specs)
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.6 * nrows), squeeze=False, sharex=True, sharey=True)
    image = None
    for ax, (label, _), (freqs_hz, times_s, power_db) in zip(axes.flat, panels, specs):
        image = ax.pcolormesh(times_s, freqs_hz / 1000.0, power_db, shading="auto",
                              vmin=top_db - DYNAMIC_RANGE_DB, vmax=top_db, cmap="magma")
        ax.set_title(label, fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency (kHz)")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="power (dB)")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

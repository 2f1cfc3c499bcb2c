"""Preview one family's ladder on one clip: every level as audio, plus a spectrogram grid.

``python -m perturbations preview REF --family F`` lets a researcher listen to and look at
the ladder before generating a whole stimulus set. The clips are made exactly as
``generate`` makes them (same reference preparation, seed derivation and writer).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from perturbations.audio import save_audio
from perturbations.files import atomic_path
from perturbations.generate.jobs import prepare_reference
from perturbations.generate.plan import (
    DEFAULT_SAMPLE_RATE,
    DEFAULT_SEED,
    TARGET_LUFS,
    derive_seed,
    level_tag,
    parse_levels,
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
        panels.append((f"level {level:g}\n{_describe(params, family_obj)}", np.asarray(perturbed, dtype=np.float32)))
    save_spectrogram_grid(out / SPECTROGRAM_NAME, panels, sample_rate, title=f"{family}: {reference.name}")
    return out


# The parameter a rung is named by (the physical axis a listener hears), first present wins.
MAIN_PARAMETERS = ("rt60_s", "snr_db", "bitrate_kbps", "cutoff_hz", "threshold_db", "bits", "abs_gain_db")


def _describe(params: dict[str, Any], family=None, max_items: int = 2) -> str:
    """A rung's label: its main parameter (``rt60_s=0.42`` for reverb, ``snr_db=12`` for
    noise: the first of ``MAIN_PARAMETERS`` present, else the family's first numeric
    parameter), else the first numeric or text parameters."""
    declared = [p.name for p in getattr(family, "parameters", ())]
    for key in (*MAIN_PARAMETERS, *declared):
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{key} = {value:.3g}" if isinstance(value, float) else f"{key} = {value}"
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
    # constrained layout keeps the two-line panel titles, the suptitle and the colour bar apart
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.0 * ncols, 3.0 * nrows + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, (label, _), (freqs_hz, times_s, power_db) in zip(axes.flat, panels, specs):
        image = ax.pcolormesh(
            times_s,
            freqs_hz / 1000.0,
            power_db,
            shading="auto",
            vmin=top_db - DYNAMIC_RANGE_DB,
            vmax=top_db,
            cmap="magma",
        )
        ax.set_title(label, fontsize=10)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for col in range(ncols):  # the lowest panel of each column carries the time axis
        last = axes[min(nrows - 1, (len(panels) - 1 - col) // ncols), col]
        last.xaxis.set_tick_params(labelbottom=True)
        last.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("frequency (kHz)")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="power (dB)")
    if title:
        fig.suptitle(title, fontsize=12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path

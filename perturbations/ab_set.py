"""An A/B preference stimulus set: clean clips and several systems' outputs, with a manifest.

The listening test's ``ab_preference`` experiments ask which of two systems' outputs
sounds closer to the clean clip. This module turns folders of outputs (e.g. two
speech enhancers run on the same noisy inputs, plus the noisy inputs themselves as
an anchor) into a stimulus set the app imports like any other: ``manifest.csv``
(DESIGN.md columns) with one ``reference`` row per clean clip and one row per
system output, ``family`` = the system's name.

Files are matched by their path relative to each folder. Every output must have
the clean clip's sample rate and length (``se enhance`` preserves both), so that the
three clips of a trial line up. Loudness is matched by default: a louder output
tends to be preferred whatever its quality, so each output is scaled to the clean
clip's integrated loudness (BS.1770), and a whole item is turned down together when
any of its clips would otherwise peak above ``peak_limit_dbfs``. The gains are in
each row's ``params``.

    build_ab_set("heldout/clean", {"l1": "runs/a/enhanced", "metric_l1": "runs/b/enhanced"},
                 "out/ab", anchor=("noisy", "heldout/noisy"))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .audio import AUDIO_EXTENSIONS, AudioError, load_audio, save_audio
from .corpora import safe_item_id, walk_audio
from .loudness import loudness_lufs
from .manifest import ManifestRow, sha256_file, write_manifest
from .provenance import code_version

SYSTEM_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,30}$")
RESERVED_NAMES = ("reference",)


class ABSetError(ValueError):
    """Folders that cannot make an A/B set; the message names the folder or file and the problem."""


@dataclass
class ABSetSummary:
    out_dir: Path
    manifest: Path
    items: int
    systems: list[str]
    anchor: str | None
    loudness_matched: bool
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [
            f"A/B set: {self.items} items x {len(self.systems)} systems ({', '.join(self.systems)})"
            + (f", anchor {self.anchor}" if self.anchor else "")
            + (", loudness matched to the clean clips" if self.loudness_matched else ""),
            f"manifest: {self.manifest}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _audio_files(folder: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, for every audio file under ``folder``."""
    if not folder.is_dir():
        raise ABSetError(f"{folder}: not a folder")
    files = {p.relative_to(folder).as_posix(): p for p in walk_audio(folder)}
    if not files:
        raise ABSetError(f"{folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def _item_id(relative: str) -> str:
    return safe_item_id("-".join(PurePosixPath(relative).with_suffix("").parts))


def check_system_name(name: str) -> None:
    if not SYSTEM_NAME_RE.match(name) or name in RESERVED_NAMES:
        raise ABSetError(f"system name {name!r}: use 1-30 letters, digits, '_', '.' or '-' (not 'reference')")


def _item_gains(
    clips: dict[str, np.ndarray], sample_rate: int, match: bool, peak_limit_dbfs: float, where: str
) -> tuple[dict[str, float], dict[str, float | None], str | None]:
    """Per clip: gain in dB, and loudness of the written clip; plus a note when something was odd."""
    note = None
    loudness: dict[str, float | None] = {}
    for name, audio in clips.items():
        try:
            loudness[name] = loudness_lufs(audio, sample_rate)
        except ValueError as error:  # silent or shorter than one gating block
            loudness[name] = None
            note = f"{where}: {name} has no integrated loudness ({error}); left at its own level"
    gains = {name: 0.0 for name in clips}
    if match and loudness["reference"] is not None:
        for name, value in loudness.items():
            if name != "reference" and value is not None:
                gains[name] = loudness["reference"] - value
    # One extra gain for the whole item keeps the matched loudness and avoids clipping.
    peaks = {name: float(np.max(np.abs(audio))) * 10 ** (gains[name] / 20) for name, audio in clips.items()}
    loudest_dbfs = 20 * np.log10(max(max(peaks.values()), 1e-12))
    if loudest_dbfs > peak_limit_dbfs:
        gains = {name: g - (loudest_dbfs - peak_limit_dbfs) for name, g in gains.items()}
    written = {name: None if (lufs := loudness[name]) is None else lufs + gains[name] for name in clips}
    return gains, written, note


def build_ab_set(
    clean_dir: str | os.PathLike,
    systems: dict[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    anchor: tuple[str, str | os.PathLike] | None = None,
    match_loudness: bool = True,
    peak_limit_dbfs: float = -1.0,
    max_items: int | None = None,
    seed: int = 0,
) -> ABSetSummary:
    """Write OUT/audio/<item>/<system>.wav and OUT/manifest.csv; see the module docstring.

    ``systems``: name -> folder of outputs (at least two); ``anchor``: (name, folder) of
    the system catch trials set against the clean clip; ``max_items``: a seeded random
    subset of the clean clips.
    """
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    folders = {name: Path(folder) for name, folder in systems.items()}
    if anchor is not None:
        if anchor[0] in folders:
            raise ABSetError(f"anchor {anchor[0]!r} is also one of the compared systems")
        folders[anchor[0]] = Path(anchor[1])
    if len(systems) < 2:
        raise ABSetError(f"an A/B set compares at least two systems, got {len(systems)}")
    for name in folders:
        check_system_name(name)
    clean_files = _audio_files(clean_dir)
    outputs = {name: _audio_files(folder) for name, folder in folders.items()}
    relatives = sorted(clean_files)
    missing = {name: [r for r in relatives if r not in files] for name, files in outputs.items()}
    missing = {name: paths for name, paths in missing.items() if paths}
    if missing:
        detail = "; ".join(
            f"{folders[n]} lacks {len(p)} ({', '.join(p[:3])}{', ...' if len(p) > 3 else ''})"
            for n, p in missing.items()
        )
        raise ABSetError(f"every clean clip in {clean_dir} needs an output of every system: {detail}")
    if max_items is not None:
        if max_items < 1:
            raise ABSetError("max_items must be >= 1")
        if max_items < len(relatives):
            chosen = np.random.default_rng(seed).choice(len(relatives), size=max_items, replace=False)
            relatives = [relatives[i] for i in sorted(chosen)]
    ids = [_item_id(r) for r in relatives]
    if len(set(ids)) != len(ids):
        raise ABSetError(f"{clean_dir}: two clean files map to the same item name; rename them")

    version = code_version()
    rows, notes = [], []
    for relative, item in zip(relatives, ids):
        try:
            clean, rate = load_audio(clean_files[relative])
            clips = {"reference": clean}
            for name in folders:
                audio, _ = load_audio(outputs[name][relative], sample_rate=rate, allow_silent=True)
                if len(audio) != len(clean):
                    raise ABSetError(
                        f"{outputs[name][relative]}: {len(audio)} samples, but the clean clip "
                        f"{clean_files[relative]} has {len(clean)}"
                    )
                clips[name] = audio
        except AudioError as error:
            raise ABSetError(str(error)) from None
        gains, written, note = _item_gains(clips, rate, match_loudness, peak_limit_dbfs, item)
        if note:
            notes.append(note)
        for name, audio in clips.items():
            is_reference = name == "reference"
            rel = f"audio/{item}/{name}.wav"
            path = out_dir / rel
            save_audio(path, (audio.astype(np.float64) * 10 ** (gains[name] / 20)).astype(np.float32), rate)
            source = clean_files[relative] if is_reference else outputs[name][relative]
            rows.append(
                ManifestRow(
                    stimulus_id=item if is_reference else f"{item}__{name}",
                    reference=item,
                    path=rel,
                    family=name,
                    level=0.0,
                    params={"system": name, "gain_db": round(gains[name], 3), "loudness_matched": match_loudness},
                    seed=seed,
                    sample_rate=rate,
                    num_samples=len(audio),
                    sha256=sha256_file(path),
                    reference_path=f"audio/{item}/reference.wav",
                    loudness_lufs=written[name],
                    source=str(source.resolve()),
                    jndlab_version=version,
                )
            )
    manifest = write_manifest(out_dir / "manifest.csv", rows)
    return ABSetSummary(
        out_dir, manifest, len(ids), sorted(systems), anchor[0] if anchor else None, match_loudness, notes
    )

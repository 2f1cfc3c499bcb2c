"""Ground truth: which stimulus a clip is, and the listeners' JNDs on the level scale.

The listeners' thresholds live in distance units (``listener.py``). Analysis fits
JNDs on the level scale of the stimulus ladder. To score one against the other, each
listener's threshold is carried onto the ladder through the auditory model: for a
reference r and family f, d_r,f(L) is the model distance between the reference and
its level-L stimulus (at the presentation level the listener used), interpolated
linearly between ladder rungs; the listener's level JND on that ladder is the lowest
level where d_r,f(L) reaches threshold_f, i.e. where its P(different) is halfway
between γ and 1 − λ, exactly the point a psychometric fit on levels estimates.

For a pooled fit (all listeners' judgments of a family together) the matching truth
is the midpoint of the population's average psychometric function on the level
scale, P̄(L) = mean over (listener, reference) tracks of γ_i + (1 − γ_i − λ_i)·F_i(d_r(L)):
the level where P̄ is halfway between mean γ and 1 − mean λ. The median of the
per-track level JNDs is reported beside it.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from perturbations.files import atomic_write_text
from perturbations.manifest import read_manifest

from .auditory import DistanceCache
from .listener import ListenerParams


@dataclass(frozen=True)
class StimulusInfo:
    stimulus_id: str
    reference: str
    family: str
    level: float
    path: Path


class StimulusIndex:
    """A delivered clip → its manifest row (the listener's "recognition").

    The server never sends a stimulus file's own bytes: every delivery is re-encoded as
    16-bit PCM with its own TPDF dither of ±1 LSB (``listening_test.web.audio``), so two
    deliveries of one stimulus differ byte for byte. A clip is therefore recognised by its
    samples: the stimulus with the same sample rate and length whose samples lie within
    ``tolerance_lsb`` (RMS, in 16-bit LSB) of the clip's. The dither and the re-encoding's
    scale (32767 instead of 32768) leave about 0.6 LSB RMS; distinct rungs of a ladder
    differ by far more (noise at 50 dB SNR under speech at -23 LUFS is ~10 LSB RMS).
    Undithered bytes (a file served as is) are found by their content hash first.

    Raises (at construction): ``perturbations.manifest.ManifestError`` for a manifest the
    format's reader refuses; OSError / soundfile errors for a manifest row whose file
    cannot be read.
    """

    #: samples compared per candidate before the full check (every STRIDE-th sample)
    STRIDE = 16

    def __init__(self, manifest: str | os.PathLike, tolerance_lsb: float = 2.0):
        self.manifest = Path(manifest)
        self.tolerance_lsb = float(tolerance_lsb)
        root = self.manifest.parent
        self.by_key: dict[str, StimulusInfo] = {}
        self.rows: list[StimulusInfo] = []
        # (sample rate, shape) -> (rows, strided samples in LSB, float32 (rows, m))
        groups: dict[tuple, tuple[list[StimulusInfo], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for row in read_manifest(self.manifest):
            info = StimulusInfo(row.stimulus_id, row.reference, row.family, row.level, row.resolve(root))
            self.rows.append(info)
            data = info.path.read_bytes()
            self.by_key[DistanceCache.key(data)] = info
            samples, rate = self._samples(data)
            infos, prints = groups[(rate, samples.shape)]
            infos.append(info)
            prints.append(samples[:: self.STRIDE].astype(np.float32))
        self._groups = {k: (infos, np.stack(prints)) for k, (infos, prints) in groups.items()}

    @staticmethod
    def _samples(data: bytes) -> tuple[np.ndarray, int]:
        """Decoded samples in 16-bit LSB (float64, full scale ±32768) and the sample rate."""
        audio, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=False)
        return audio * 32768.0, int(rate)

    def lookup(self, data: bytes) -> StimulusInfo | None:
        """The stimulus a delivered clip (bytes of an audio file) is, or None if none is near enough."""
        info = self.by_key.get(DistanceCache.key(data))
        if info is not None:
            return info
        try:
            samples, rate = self._samples(data)
        except (RuntimeError, sf.LibsndfileError):
            return None
        group = self._groups.get((rate, samples.shape))
        if group is None:
            return None
        infos, prints = group
        probe = samples[:: self.STRIDE].astype(np.float32)
        axes = tuple(range(1, prints.ndim))
        rms = np.sqrt(np.mean((prints - probe) ** 2, axis=axes))
        best = int(np.argmin(rms))
        if rms[best] > self.tolerance_lsb:
            return None
        full, _ = self._samples(infos[best].path.read_bytes())  # confirm on every sample
        if float(np.sqrt(np.mean((full - samples) ** 2))) > self.tolerance_lsb:
            return None
        return infos[best]

    def canonical_bytes(self, data: bytes) -> bytes:
        """The stimulus file's own bytes for a recognised delivery, else ``data`` unchanged.

        Distances computed on these are the ones ``population_truth`` uses, and two
        deliveries of one stimulus share one cache entry (distance exactly 0)."""
        info = self.lookup(data)
        return info.path.read_bytes() if info is not None else data

    def reference_row(self, reference: str) -> StimulusInfo:
        for info in self.rows:
            if info.family == "reference" and info.stimulus_id == reference:
                return info
        raise KeyError(f"reference {reference!r} not in {self.manifest}")

    def ladder(self, reference: str, family: str) -> list[StimulusInfo]:
        return sorted(
            (i for i in self.rows if i.reference == reference and i.family == family and i.family != "reference"),
            key=lambda i: i.level,
        )

    def families(self) -> list[str]:
        return sorted({i.family for i in self.rows if i.family != "reference"})

    def references(self) -> list[str]:
        return sorted({i.reference for i in self.rows if i.family != "reference"})


def ladder_distances(
    index: StimulusIndex, cache: DistanceCache, reference: str, family: str, presentation_db_spl: float
) -> tuple[np.ndarray, np.ndarray]:
    """(levels, d(reference, stimulus at level)) along one ladder."""
    ref_bytes = index.reference_row(reference).path.read_bytes()
    rungs = index.ladder(reference, family)
    levels = np.array([r.level for r in rungs], float)
    dist = np.array([cache.distance(ref_bytes, r.path.read_bytes(), presentation_db_spl) for r in rungs])
    return levels, dist


def level_threshold(levels: np.ndarray, distances: np.ndarray, threshold: float) -> float:
    """Lowest level where the interpolated distance reaches ``threshold``.

    Returns the lowest rung if it is already above (censored below) and +inf if the
    ladder never reaches it (censored above).
    """
    if len(levels) == 0:
        return math.nan
    if distances[0] >= threshold:
        return float(levels[0])
    for i in range(1, len(levels)):
        if distances[i] >= threshold:
            d0, d1 = distances[i - 1], distances[i]
            frac = (threshold - d0) / (d1 - d0) if d1 > d0 else 1.0
            return float(levels[i - 1] + frac * (levels[i] - levels[i - 1]))
    return math.inf


def population_truth(
    index: StimulusIndex,
    cache: DistanceCache,
    listeners: list[ListenerParams],
    tracks: dict[str, set[tuple[str, str]]],
    presentation: dict[str, float],
    grid_step: float = 0.5,
) -> dict:
    """Level-scale truth per family for the given listeners.

    ``tracks``: worker id → the (reference, family) pairs that listener judged.
    ``presentation``: worker id → the dB SPL of a full-scale RMS signal it listened at.
    Returns {"per_listener": {worker: {"ref|family": L*}}, "families": {family: {...}}}.
    """
    per_listener: dict[str, dict[str, float]] = {}
    curves: dict[str, list[tuple[np.ndarray, float, float, np.ndarray]]] = defaultdict(list)  # (grid, gamma, lapse, p)
    per_track: dict[str, list[float]] = defaultdict(list)
    ladders: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for listener in listeners:
        level_db = presentation.get(listener.worker_id)
        if level_db is None:
            continue
        out = {}
        for reference, family in sorted(tracks.get(listener.worker_id, ())):
            key = (reference, family, round(level_db, 1))
            if key not in ladders:
                ladders[key] = ladder_distances(index, cache, reference, family, level_db)
            levels, dist = ladders[key]
            if len(levels) < 2:
                continue
            thr = listener.threshold(family)
            jnd = level_threshold(levels, dist, thr)
            out[f"{reference}|{family}"] = jnd
            per_track[family].append(jnd)
            grid = np.arange(levels[0], levels[-1] + grid_step / 2, grid_step)
            d = np.interp(grid, levels, dist)
            f = 1.0 - np.exp2(-((np.maximum(d, 0.0) / thr) ** listener.slope(family)))
            p = listener.false_alarm + (1 - listener.false_alarm - listener.lapse) * f
            curves[family].append((grid, listener.false_alarm, listener.lapse, p))
        per_listener[listener.worker_id] = out
    families = {}
    for family, items in curves.items():
        grid = items[0][0]
        if any(len(g) != len(grid) or not np.allclose(g, grid) for g, *_ in items):
            midpoint = math.nan  # ladders differ between references; no common grid
        else:
            mean_p = np.mean([p for *_, p in items], axis=0)
            gamma = float(np.mean([g for _, g, _, _ in items]))
            lapse = float(np.mean([lam for _, _, lam, _ in items]))
            half = (gamma + 1.0 - lapse) / 2.0
            above = np.flatnonzero(mean_p >= half)
            midpoint = (
                math.inf
                if len(above) == 0
                else float(
                    grid[0]
                    if above[0] == 0
                    else np.interp(half, mean_p[above[0] - 1 : above[0] + 1], grid[above[0] - 1 : above[0] + 1])
                )
            )
        jnds = np.array(per_track[family])
        families[family] = {
            "pooled_midpoint_level": midpoint,
            "median_level_jnd": float(np.median(jnds)) if len(jnds) else math.nan,
            "n_tracks": int(len(jnds)),
            "n_censored_above": int(np.sum(np.isinf(jnds))),
        }
    return {"per_listener": per_listener, "families": families}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_truth(path: str | os.PathLike, payload: dict) -> Path:
    """Write the truth JSON atomically (temporary file, then rename)."""
    return atomic_write_text(path, json.dumps(_json_safe(payload), indent=1, sort_keys=False))

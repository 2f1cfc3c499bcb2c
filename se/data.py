"""Noisy/clean training pairs: paired folders (Valentini/VCTK layout) or synthesis on the fly.

Paired folders: ``noisy_trainset_wav/p226_001.wav`` beside ``clean_trainset_wav/p226_001.wav``
(also ``noisy_trainset_28spk_wav``, ``noisy_testset_wav``, or plain ``noisy/`` + ``clean/``).
Every noisy file needs a clean file of the same name, length and rate; anything else is a
``PairError`` naming the files.

Synthesis: a clean corpus (``perturbations.corpora.find_audio``) plus the perturbation
engine's noise family (``get_family("noise", noise_dir=...)``). The SNR (dB, power over
the segment) is drawn uniformly from ``snr_db`` and the noise (colour / file / excerpt) by
the family, all from ``numpy.random.default_rng([seed, stream, epoch, index])``: item i
of epoch e is the same on every run and every process. The family is called directly,
not through ``make_stimulus``: its loudness matching would rescale the mixture, and the
clean target must be exactly the speech inside the noisy input (noisy = clean + noise).

The held-out set is drawn once from clean clips kept out of training and written to disk
(``write_heldout``) in the paired layout plus ``heldout.csv`` (SNR and noise params per
file), so evaluation is reproducible and does not depend on this code.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perturbations.audio import AUDIO_EXTENSIONS, AudioError, load_audio, resample, save_audio
from perturbations.manifest import sha256_file

# independent random streams under one seed
_TRAIN_STREAM, _HELDOUT_STREAM, _SPLIT_STREAM = 1, 2, 3
HELDOUT_NOISY, HELDOUT_CLEAN, HELDOUT_CSV = "noisy_testset_wav", "clean_testset_wav", "heldout.csv"
_SILENT_RMS = 1e-5  # about -100 dBFS: no SNR can be set on such a crop


class PairError(ValueError):
    """Paired folders that do not match; the message names the files."""


@functools.lru_cache(maxsize=512)
def _cached_audio(path: str, sample_rate: int, mtime_ns: int) -> np.ndarray:
    audio = load_mono(path, sample_rate)
    audio.flags.writeable = False
    return audio


def load_mono(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """float32 mono at ``sample_rate`` (multichannel averaged, other rates resampled)."""
    audio, rate = load_audio(path, mix_to_mono=True, allow_silent=True)
    if rate != sample_rate:  # asked for: training runs at the network's rate
        audio = resample(audio, rate, sample_rate)
    return audio


def read_clip(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    path = Path(path)
    return _cached_audio(str(path), int(sample_rate), path.stat().st_mtime_ns)


def _audio_files(folder: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    }


def find_pair_dirs(root: str | os.PathLike, split: str = "test") -> tuple[Path, Path]:
    """``(noisy_dir, clean_dir)`` under ``root``: Valentini names for ``split`` or noisy/ + clean/."""
    root = Path(root)
    if not root.is_dir():
        raise PairError(f"{root}: not a folder")
    candidates = [(f"noisy_{split}set_wav", f"clean_{split}set_wav"), ("noisy", "clean")]
    for spk in ("28spk", "56spk"):
        candidates.append((f"noisy_{split}set_{spk}_wav", f"clean_{split}set_{spk}_wav"))
    for noisy, clean in candidates:
        if (root / noisy).is_dir() and (root / clean).is_dir():
            return root / noisy, root / clean
    raise PairError(
        f"{root}: holds no noisy/clean folder pair ({HELDOUT_NOISY} + {HELDOUT_CLEAN}, "
        f"noisy_{split}set_wav + clean_{split}set_wav, or noisy + clean)"
    )


@dataclass(frozen=True)
class Pair:
    name: str
    noisy: Path
    clean: Path
    num_samples: int
    sample_rate: int


def match_pairs(noisy_dir: str | os.PathLike, clean_dir: str | os.PathLike) -> list[Pair]:
    """Pairs by file name; ``PairError`` for missing partners or unequal lengths / rates."""
    import soundfile as sf

    noisy_dir, clean_dir = Path(noisy_dir), Path(clean_dir)
    for folder in (noisy_dir, clean_dir):
        if not folder.is_dir():
            raise PairError(f"{folder}: not a folder")
    noisy, clean = _audio_files(noisy_dir), _audio_files(clean_dir)
    if not noisy:
        raise PairError(f"{noisy_dir}: holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    only_noisy, only_clean = sorted(set(noisy) - set(clean)), sorted(set(clean) - set(noisy))
    if only_noisy or only_clean:
        parts = []
        if only_noisy:
            parts.append(
                f"{len(only_noisy)} noisy file(s) without a clean partner in {clean_dir} "
                f"(e.g. {', '.join(only_noisy[:3])})"
            )
        if only_clean:
            parts.append(
                f"{len(only_clean)} clean file(s) without a noisy partner in {noisy_dir} "
                f"(e.g. {', '.join(only_clean[:3])})"
            )
        raise PairError("; ".join(parts))
    pairs = []
    for name in sorted(noisy):
        infos = []
        for path in (noisy[name], clean[name]):
            try:
                infos.append(sf.info(str(path)))
            except (sf.LibsndfileError, RuntimeError) as error:
                raise PairError(f"{path}: not readable as audio ({error})") from None
        (a, b) = infos
        if a.samplerate != b.samplerate:
            raise PairError(f"{noisy[name]} is at {a.samplerate} Hz but {clean[name]} at {b.samplerate} Hz")
        if a.frames != b.frames:
            raise PairError(f"{noisy[name]} has {a.frames} samples but {clean[name]} has {b.frames}")
        pairs.append(Pair(name, noisy[name], clean[name], int(a.frames), int(a.samplerate)))
    return pairs


def _crop(length: int, segment: int | None, rng: np.random.Generator) -> int:
    return int(rng.integers(length - segment + 1)) if segment is not None and length > segment else 0


def _fit(audio: np.ndarray, offset: int, segment: int | None) -> np.ndarray:
    if segment is None:
        return np.asarray(audio, dtype=np.float32)
    out = np.zeros(segment, dtype=np.float32)  # shorter clips: zero-padded at the end
    piece = audio[offset : offset + segment]
    out[: len(piece)] = piece
    return out


class PairedDataset:
    """Random crops of paired files: ``item(index, epoch) -> (noisy, clean)``."""

    def __init__(self, pairs: Sequence[Pair], sample_rate: int, segment_samples: int | None, seed: int):
        if not pairs:
            raise ValueError("no noisy/clean pairs to train on")
        self.pairs, self.sample_rate, self.segment, self.seed = (
            list(pairs),
            int(sample_rate),
            segment_samples,
            int(seed),
        )

    def __len__(self) -> int:
        return len(self.pairs)

    def item(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[index]
        noisy, clean = read_clip(pair.noisy, self.sample_rate), read_clip(pair.clean, self.sample_rate)
        offset = _crop(len(clean), self.segment, np.random.default_rng([self.seed, _TRAIN_STREAM, epoch, index]))
        return _fit(noisy, offset, self.segment), _fit(clean, offset, self.segment)


@dataclass(frozen=True)
class NoiseSpec:
    """How noise is mixed in: SNR range (dB) and the noise family's options."""

    snr_db: tuple[float, float] = (-5.0, 20.0)
    noise_dir: str | None = None
    noise_types: tuple[str, ...] | None = None

    def __post_init__(self):
        low, high = (float(v) for v in self.snr_db)
        if not (np.isfinite(low) and np.isfinite(high)) or low > high:
            raise ValueError(f"snr_db must be a finite range (low <= high), got {self.snr_db}")
        if low < -60 or high > 200:
            raise ValueError(f"snr_db must lie within [-60, 200] dB, got {self.snr_db}")

    def family(self):
        from perturbations.registry import get_family

        options = {} if self.noise_dir is None else {"noise_dir": self.noise_dir}
        if self.noise_types:
            options["noise_types"] = tuple(self.noise_types)
        return get_family("noise", **options)

    def to_dict(self) -> dict:
        return {
            "snr_db": list(self.snr_db),
            "noise_dir": self.noise_dir,
            "noise_types": list(self.noise_types) if self.noise_types else None,
        }


def mix(
    clean: np.ndarray, sample_rate: int, family, snr_db_range: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """``clean + noise`` at an SNR drawn from ``snr_db_range``; returns the mixture and params."""
    snr_db = float(rng.uniform(*snr_db_range))
    params = family.sample_params(0.0, rng, sample_rate=sample_rate, num_samples=len(clean))
    params["snr_db"] = snr_db  # the family draws the noise; the SNR comes from our range
    if float(np.sqrt(np.mean(np.square(clean, dtype=np.float64)))) < _SILENT_RMS:
        return clean.copy(), {**params, "silent_clean": True}  # no SNR exists: leave it noise-free
    return family.apply(clean, sample_rate, params), params


class SyntheticDataset:
    """``item(index, epoch) -> (noisy, clean)``: a random crop of clean clip ``index`` plus noise."""

    def __init__(
        self,
        clean_paths: Sequence[str | os.PathLike],
        sample_rate: int,
        segment_samples: int | None,
        noise: NoiseSpec,
        seed: int,
    ):
        if not clean_paths:
            raise ValueError("no clean clips to train on")
        self.paths = [Path(p) for p in clean_paths]
        self.sample_rate, self.segment, self.noise, self.seed = int(sample_rate), segment_samples, noise, int(seed)
        self.family = noise.family()

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, epoch, index])
        audio = read_clip(self.paths[index], self.sample_rate)
        clean = _fit(audio, _crop(len(audio), self.segment, rng), self.segment)
        noisy, _ = mix(clean, self.sample_rate, self.family, self.noise.snr_db, rng)
        return noisy.astype(np.float32), clean


def split_clean_corpus(
    root: str | os.PathLike, heldout_fraction: float, seed: int, heldout_max: int = 100
) -> tuple[list[Path], list[Path], list[str]]:
    """``(train_paths, heldout_paths, heldout_ids)``: a seeded split of the corpus by clip."""
    from perturbations.corpora import find_audio

    items = find_audio(root, "auto")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction}")
    n_held = min(heldout_max, int(round(heldout_fraction * len(items))))
    if heldout_fraction > 0 and len(items) > 1:
        n_held = max(1, n_held)
    if n_held >= len(items):
        raise ValueError(f"{root}: {len(items)} clip(s) leave none for training after holding out {n_held}")
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(len(items))
    held = sorted(int(i) for i in order[:n_held])
    train = sorted(int(i) for i in order[n_held:])
    return ([items[i].path for i in train], [items[i].path for i in held], [items[i].item_id for i in held])


HELDOUT_COLUMNS = (
    "file",
    "clean_source",
    "snr_db",
    "noise_type",
    "noise_params",
    "seed",
    "sample_rate",
    "num_samples",
    "noisy_sha256",
    "clean_sha256",
    "clean_id",
)
MIXTURE_SEPARATOR = "__m"  # item ids never hold "__" (perturbations.corpora)


def write_heldout(
    clean_paths: Sequence[str | os.PathLike],
    item_ids: Sequence[str],
    out_dir: str | os.PathLike,
    noise: NoiseSpec,
    sample_rate: int,
    seed: int,
    max_seconds: float | None = None,
    mixtures_per_clip: int = 1,
) -> Path:
    """Write the fixed held-out set: noisy + clean float32 WAVs and ``heldout.csv``.

    Item i uses ``default_rng([seed, HELDOUT_STREAM, i])``; the same inputs give the same
    bytes. Clips longer than ``max_seconds`` keep their first ``max_seconds``.
    ``mixtures_per_clip`` > 1 mixes each clean clip k times (noise and SNR drawn from
    ``default_rng([seed, HELDOUT_STREAM, i, k])``) into ``<id>__m<k>.wav``: more test
    conditions from a small corpus. The ``clean_id`` column names each row's clip, so
    training can leave those clips out (``heldout_clean_sources``).
    Returns the path of heldout.csv.
    """
    if int(mixtures_per_clip) < 1:
        raise ValueError(f"mixtures_per_clip must be at least 1, got {mixtures_per_clip}")
    out = Path(out_dir)
    family = noise.family()
    rows = []
    jobs = [
        (i, k, path, item_id)
        for i, (path, item_id) in enumerate(zip(clean_paths, item_ids))
        for k in range(int(mixtures_per_clip))
    ]
    for i, k, path, item_id in jobs:
        clean = np.array(read_clip(path, sample_rate))
        if max_seconds is not None:
            clean = clean[: max(1, int(round(max_seconds * sample_rate)))]
        if mixtures_per_clip == 1:  # the original single-mixture layout, byte for byte
            rng, name = np.random.default_rng([seed, _HELDOUT_STREAM, i]), f"{item_id}.wav"
        else:
            rng, name = np.random.default_rng([seed, _HELDOUT_STREAM, i, k]), f"{item_id}{MIXTURE_SEPARATOR}{k}.wav"
        noisy, params = mix(clean, sample_rate, family, noise.snr_db, rng)
        save_audio(out / HELDOUT_NOISY / name, noisy, sample_rate)
        save_audio(out / HELDOUT_CLEAN / name, clean, sample_rate)
        rows.append(
            {
                "file": name,
                "clean_source": str(Path(path).resolve()),
                "snr_db": f"{params['snr_db']:.4f}",
                "noise_type": params.get("noise_type", ""),
                "noise_params": json.dumps(
                    {k: v for k, v in params.items() if k not in ("snr_db", "noise_type")}, sort_keys=True
                ),
                "seed": seed,
                "sample_rate": sample_rate,
                "num_samples": len(clean),
                "noisy_sha256": sha256_file(out / HELDOUT_NOISY / name),
                "clean_sha256": sha256_file(out / HELDOUT_CLEAN / name),
                "clean_id": item_id,
            }
        )
    from perturbations.files import atomic_path

    with atomic_path(out / HELDOUT_CSV) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=HELDOUT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return out / HELDOUT_CSV


def read_heldout_csv(root: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{file: row}`` of ``root/heldout.csv``, or ``{}`` for a set without one (e.g. Valentini)."""
    path = Path(root) / HELDOUT_CSV
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def heldout_clean_sources(root: str | os.PathLike) -> tuple[set[Path], set[str]]:
    """The clean clips a held-out set was made from: (resolved source paths, clip ids).

    Sets written before the ``clean_id`` column existed give the file stem as the id.
    """
    paths, ids = set(), set()
    for name, row in read_heldout_csv(root).items():
        if row.get("clean_source"):
            paths.add(Path(row["clean_source"]).resolve())
        ids.add(row.get("clean_id") or Path(name).stem.split(MIXTURE_SEPARATOR)[0])
    return paths, ids


def exclude_heldout(clean_dir: str | os.PathLike, heldout_root: str | os.PathLike) -> list[Path]:
    """The corpus's clips minus those a held-out set was made from (by source path or clip id).

    This is what training uses whenever a held-out set exists, so a set made with another
    ``--fraction`` or ``--seed`` (``se make-heldout``) never leaks its clean clips into training.
    """
    from perturbations.corpora import find_audio

    paths, ids = heldout_clean_sources(heldout_root)
    kept = [
        item.path
        for item in find_audio(clean_dir, "auto")
        if Path(item.path).resolve() not in paths and item.item_id not in ids
    ]
    if not kept:
        raise ValueError(f"{clean_dir}: every clip is in the held-out set {heldout_root}; nothing left to train on")
    return kept


def check_heldout(root: str | os.PathLike) -> list[str]:
    """Files whose bytes no longer match heldout.csv (empty: the set is intact)."""
    root = Path(root)
    bad = []
    for name, row in read_heldout_csv(root).items():
        for sub, key in ((HELDOUT_NOISY, "noisy_sha256"), (HELDOUT_CLEAN, "clean_sha256")):
            path = root / sub / name
            if not path.is_file() or sha256_file(path) != row[key]:
                bad.append(str(path))
    return bad


__all__ = [
    "AudioError",
    "NoiseSpec",
    "Pair",
    "PairError",
    "PairedDataset",
    "SyntheticDataset",
    "check_heldout",
    "exclude_heldout",
    "find_pair_dirs",
    "heldout_clean_sources",
    "load_mono",
    "match_pairs",
    "mix",
    "read_clip",
    "read_heldout_csv",
    "split_clean_corpus",
    "write_heldout",
]

"""What a run makes: the settings (``GenerateConfig``), levels, seeds, ids, and the job lists.

Planning is pure: it reads the input folder's listing (``corpora.find_audio``) and the
registry, never audio. Every id and seed is a function of the inputs and the settings only,
so two runs (or a resumed one) plan the same jobs with the same journal keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perturbations.generate.jobs import Job
from perturbations.manifest import REFERENCE_FAMILY, ManifestRow, format_level

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_LEVELS = 11
DEFAULT_SEED = 0
TARGET_LUFS = -23.0  # EBU R128 programme loudness; every reference is normalised to it
REFERENCE_DIR = "reference"
SUBTYPES = ("FLOAT", "PCM_16", "PCM_24")
EXCLUDED_BY_DEFAULT = ("chain",)  # combined perturbations are opt-in, as in DPAM


class GenerateError(RuntimeError):
    """The run cannot go on; the message is one line that says why."""


def parse_levels(spec: str | int | Sequence[float]) -> tuple[float, ...]:
    """The levels (0..100 strengths) of ``--levels``: sorted, without repeats.

    ``"11"`` or ``11``: 11 levels evenly spaced over 0..100 (rounded to 0.01). ``"0,50,100"``
    or a sequence: those levels. Raises ``ValueError`` (message starting ``--levels:``) for
    unreadable text, a count below 2, no levels, or a level outside [0, 100] or not finite.
    """
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text:
            try:
                values = [float(part) for part in text.split(",") if part.strip()]
            except ValueError:
                raise ValueError(f"--levels: cannot read {spec!r} as a comma-separated list of numbers") from None
            return _check_levels(values, spec)
        try:
            count = int(text)
        except ValueError:
            raise ValueError(
                f"--levels: expected a count such as 11 or a list such as 0,50,100, got {spec!r}"
            ) from None
        return parse_levels(count)
    if isinstance(spec, (int, np.integer)):
        if spec < 2:
            raise ValueError(
                f"--levels: a count must be at least 2 (0 and 100), got {spec}; give a list such as '50,' for one level"
            )
        return _check_levels([round(float(v), 2) for v in np.linspace(0.0, 100.0, int(spec))], spec)
    return _check_levels([float(v) for v in spec], spec)


def _check_levels(values: list[float], spec: Any) -> tuple[float, ...]:
    if not values:
        raise ValueError(f"--levels: no levels in {spec!r}")
    for value in values:
        if not (math.isfinite(value) and 0.0 <= value <= 100.0):
            raise ValueError(f"--levels: every level must lie in [0, 100], got {format_level(value)}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class GenerateConfig:
    """The settings of one run; rerunning with equal settings resumes it.

    ``levels``: 0..100 strengths; ``sample_rate`` in Hz (``audio.SUPPORTED_SAMPLE_RATES``);
    ``target_lufs``: BS.1770 loudness of every reference, LUFS; ``subtype``: WAV sample format
    (``SUBTYPES``); ``layout``: corpus layout of ``input_dir`` (``corpora.find_audio``).
    """

    input_dir: Path
    output_dir: Path
    families: tuple[str, ...] | None = None  # None: every single family
    levels: tuple[float, ...] = tuple(parse_levels(DEFAULT_LEVELS))
    seed: int = DEFAULT_SEED
    sample_rate: int = DEFAULT_SAMPLE_RATE
    resample: bool = False
    target_lufs: float = TARGET_LUFS
    subtype: str = "FLOAT"
    layout: str = "auto"
    family_options: tuple[tuple[str, str], ...] = ()  # e.g. (("noise_dir", "/data/noise"),)
    code_version: str | None = None  # None: code_version()


def derive_seed(global_seed: int, reference_id: str, family: str) -> int:
    """A stable 63-bit seed per ladder (reference × family). hashlib, not hash(): the latter is salted per process.

    The seed does not depend on the level, so every rung of a ladder makes the same random
    choices (noise type and excerpt, room, EQ signs, chain order) and differs from its
    neighbours only in strength: a listener walking the ladder hears one perturbation grow.
    """
    text = f"jndlab-seed-v2|{int(global_seed)}|{reference_id}|{family}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def level_tag(level: float) -> str:
    """``L010`` for integral levels, ``L016.67`` otherwise; filesystem-safe. Raises nothing."""
    if float(level).is_integer():
        return f"L{int(level):03d}"
    return f"L{float(level):06.2f}"


def safe_id(text: str) -> str:
    """``text`` with every character other than letters, digits and ``._-`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def reference_id(item_id: str) -> str:
    """The manifest id of an input's reference: ``SAFEID__reference``."""
    return f"{safe_id(item_id)}__{REFERENCE_FAMILY}"


def stimulus_id(item_id: str, family: str, level: float) -> str:
    """The manifest id of a stimulus: ``SAFEID__FAMILY__L050`` (see ``level_tag``)."""
    return f"{safe_id(item_id)}__{family}__{level_tag(level)}"


def resolve_families(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """The family names a run makes, in the order given, without repeats.

    ``None`` or ``""``: every single family (not ``chain``). ``"all"``: every family. Else a
    comma-separated string or a sequence of registry names. Raises ``GenerateError`` for an
    unknown name or an empty list.
    """
    from perturbations.registry import available_families

    available = list(available_families())
    if spec is None or spec == "":
        return tuple(name for name in available if name not in EXCLUDED_BY_DEFAULT)
    names = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [name for name in names if name]
    if names == ["all"]:
        return tuple(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise GenerateError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; choose from {', '.join(available)}"
        )
    if not names:
        raise GenerateError("--families is empty")
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


def plan_references(config: GenerateConfig, version: str, headroom_db: dict[str, float] | None = None) -> list[Job]:
    """One reference job per audio file found under ``config.input_dir`` (``corpora.find_audio``).

    ``version``: the code version recorded in each row. ``headroom_db``: item id -> extra
    attenuation in dB for references whose stimuli would clip (decided by earlier rounds).
    Raises ``GenerateError`` for a missing or empty input folder or a corpus-layout error.
    """
    from perturbations.corpora import find_audio

    input_dir = Path(config.input_dir)
    if not input_dir.exists():
        raise GenerateError(f"input folder {input_dir} does not exist")
    if not input_dir.is_dir():
        raise GenerateError(f"input {input_dir} is not a folder")
    try:
        items = find_audio(input_dir, layout=config.layout)
    except ValueError as error:  # CorpusError: empty folder, wrong layout, duplicate ids
        raise GenerateError(str(error)) from None
    if not items:
        raise GenerateError(f"no audio files (wav, flac, ogg, mp3) found under {input_dir}")
    jobs = []
    for item in items:
        source = Path(item.path).absolute()  # not resolve(): a dangling link is reported by its own name
        try:
            source_rel = source.relative_to(input_dir.absolute()).as_posix()
        except ValueError:
            source_rel = str(source)
        stat = source.stat() if source.exists() else None
        ref_id = reference_id(item.item_id)
        rel_path = f"{REFERENCE_DIR}/{ref_id}.wav"
        jobs.append(
            Job(
                kind="reference",
                stimulus_id=ref_id,
                reference_id=ref_id,
                item_id=item.item_id,
                source=str(source),
                source_rel=source_rel,
                speaker=item.speaker or "",
                family=REFERENCE_FAMILY,
                level=0.0,
                seed=0,  # a reference draws no random numbers; --seed must not invalidate it
                rel_path=rel_path,
                reference_rel_path=rel_path,
                out_root=str(Path(config.output_dir).resolve()),
                sample_rate=config.sample_rate,
                resample=config.resample,
                target_lufs=config.target_lufs,
                subtype=config.subtype,
                family_options=(),
                code_version=version,
                identity=f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "",
                headroom_db=(headroom_db or {}).get(item.item_id, 0.0),
            )
        )
    return jobs


def plan_stimuli(
    config: GenerateConfig, families: Sequence[str], references: Iterable[tuple[Job, ManifestRow]]
) -> list[Job]:
    """One stimulus job per reference × family × level, derived from the reference's job and its written row.

    A stimulus job keeps its reference job's input and output settings; it adds the
    family, level, ladder seed (``derive_seed``) and the written reference's path, sha256
    (``identity``) and loudness. Raises nothing.
    """
    jobs = []
    for ref_job, ref_row in references:
        for family in families:
            seed = derive_seed(config.seed, ref_job.item_id, family)
            for level in config.levels:
                sid = stimulus_id(ref_job.item_id, family, level)
                jobs.append(
                    dataclasses.replace(
                        ref_job,
                        kind="stimulus",
                        stimulus_id=sid,
                        family=family,
                        level=float(level),
                        seed=seed,
                        rel_path=f"{family}/{sid}.wav",
                        reference_rel_path=ref_row.path,
                        reference_lufs=ref_row.loudness_lufs,
                        family_options=config.family_options,
                        identity=ref_row.sha256,
                        headroom_db=0.0,
                    )
                )
    return jobs

"""Find the clean recordings of the corpora researchers already have.

``find_audio(root, layout)`` lists a corpus as ``CorpusItem``s (path, a unique filesystem-safe
``item_id``, speaker, extra metadata) in a deterministic order. It only walks the folder
layout; the audio itself is read later through ``perturbations.audio.load_audio`` (soundfile).

Layouts:
- ``folder``: any folder of wav/flac/ogg/mp3 files, searched recursively.
- ``vctk``: VCTK 0.92 (``wav48_silence_trimmed/p225/p225_001_mic1.flac``, one microphone,
  mic1 by default) or the older VCTK-Corpus (``wav48/p225/p225_001.wav``); transcripts from
  ``txt/`` and speaker facts from ``speaker-info.txt`` go into ``extra`` when present.
- ``daps``: DAPS (``daps/<version>/f1_script1_<version>.wav``); one version, clean by default.
- ``librispeech``: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
  with the ``.trans.txt`` transcripts in ``extra["text"]``.
- ``auto``: the first of vctk, librispeech, daps that matches, else folder.

Why not ``torchaudio.datasets``: with torchaudio 2.11 their ``__getitem__`` loads audio through
``torchaudio.load``, which needs torchcodec (not installed; jndlab reads audio with soundfile),
so ``LIBRISPEECH(root, download=False)[0]`` raises ImportError. ``LIBRISPEECH.get_metadata``
does work without it, but accepts only the seven official subset names and reopens the
transcript file for every utterance; walking the layout here is as short and covers all four.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perturbations.audio import AUDIO_EXTENSIONS

LAYOUTS = ("auto", "folder", "vctk", "daps", "librispeech")


class CorpusError(ValueError):
    """A corpus folder that cannot be listed; the message names the folder and the reason."""


@dataclass(frozen=True)
class CorpusItem:
    path: Path
    item_id: str  # unique within the corpus, filesystem-safe: [A-Za-z0-9._-], no "__"
    speaker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def find_audio(
    root: str | os.PathLike,
    layout: str = "auto",
    *,
    vctk_mic: str = "mic1",
    daps_version: str = "clean",
    librispeech_subsets: Sequence[str] | None = None,
) -> list[CorpusItem]:
    """List the clean recordings under ``root`` as ``CorpusItem``s, sorted by ``item_id``.

    ``vctk_mic``: mic1 or mic2 for VCTK 0.92. ``daps_version``: clean, produced, cleanraw,
    ipad_office1, ... ``librispeech_subsets``: e.g. ``["dev-clean"]``; all found by default.
    Raises ``CorpusError`` for a missing or empty ``root`` or one that does not match ``layout``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown corpus layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus folder does not exist")
    if not root.is_dir():
        raise CorpusError(f"{root}: is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "vctk":
        items = _vctk(root, vctk_mic)
    elif layout == "daps":
        items = _daps(root, daps_version)
    elif layout == "librispeech":
        items = _librispeech(root, librispeech_subsets)
    else:
        items = _folder(root)
    if not items:
        raise CorpusError(f"{root}: holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) for layout {layout}")
    duplicates = [i for i, n in Counter(item.item_id for item in items).items() if n > 1]
    if duplicates:
        raise CorpusError(f"{root}: item ids occur more than once: {', '.join(sorted(duplicates)[:5])}")
    return sorted(items, key=lambda item: item.item_id)


def detect_layout(root: Path) -> str:
    """The layout of ``root``: vctk, librispeech, daps or folder."""
    if _vctk_audio_dir(root) is not None:
        return "vctk"
    if _librispeech_subsets(root):
        return "librispeech"
    if _daps_dir(root) is not None:
        return "daps"
    return "folder"


# --- any folder -----------------------------------------------------------------------------


def walk_audio(root: Path) -> list[Path]:
    """Audio files under ``root``, recursively, sorted; hidden files and folders are skipped
    (macOS ``._name.wav`` resource forks, half-written ``.name.part`` files)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [
            Path(folder, name)
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS
        ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _folder(root: Path) -> list[CorpusItem]:
    paths = walk_audio(root)
    rels = [p.relative_to(root) for p in paths]
    ids = [safe_item_id("-".join(rel.with_suffix("").parts)) for rel in rels]
    # a.wav beside a.flac, or a/b.wav beside a-b.wav: keep the suffix, then number the rest
    counts = Counter(ids)
    ids = [safe_item_id("-".join(rel.parts)) if counts[i] > 1 else i for i, rel in zip(ids, rels, strict=True)]
    seen: Counter[str] = Counter()
    items = []
    for path, rel, item_id in zip(paths, rels, ids, strict=True):
        seen[item_id] += 1
        unique = item_id if seen[item_id] == 1 else f"{item_id}-{seen[item_id]}"
        items.append(CorpusItem(path, unique, None, {"relative_path": rel.as_posix()}))
    return items


def safe_item_id(text: str) -> str:
    """ASCII letters, digits, ``.``, ``_`` and ``-`` only; no ``__`` (the stimulus id separator)
    and no leading dot."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    safe = re.sub(r"_{2,}", "_", safe).lstrip(".")
    return safe or "item"


# --- VCTK -----------------------------------------------------------------------------------

_VCTK_DIRS = ("wav48_silence_trimmed", "wav48")
_VCTK_092 = re.compile(r"^(p\d+|s\d+)_(\d+)_(mic\d)$")
_VCTK_OLD = re.compile(r"^(p\d+|s\d+)_(\d+)$")


def _vctk_audio_dir(root: Path) -> Path | None:
    """``root`` itself, ``root/wav48*`` or ``root/<corpus>/wav48*`` (e.g. VCTK-Corpus-0.92)."""
    if root.name in _VCTK_DIRS and _speaker_dirs(root):
        return root
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        for name in _VCTK_DIRS:
            if (base / name).is_dir() and _speaker_dirs(base / name):
                return base / name
    return None


def _speaker_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"[ps]\d+", p.name))


def _vctk(root: Path, mic: str) -> list[CorpusItem]:
    audio_dir = _vctk_audio_dir(root)
    if audio_dir is None:
        raise CorpusError(f"{root}: not a VCTK corpus (no {' or '.join(_VCTK_DIRS)}/<speaker>/ folders)")
    corpus_dir = audio_dir.parent
    speakers = _vctk_speaker_info(corpus_dir / "speaker-info.txt")
    items, mics_seen = [], set()
    for speaker_dir in _speaker_dirs(audio_dir):
        for path in walk_audio(speaker_dir):
            if match := _VCTK_092.match(path.stem):
                speaker, utterance, file_mic = match.groups()
                mics_seen.add(file_mic)
                if file_mic != mic:
                    continue
            elif match := _VCTK_OLD.match(path.stem):  # the old corpus has one microphone
                speaker, utterance = match.groups()
                file_mic = None
            else:
                continue
            item_id = f"{speaker}_{utterance}"
            extra: dict[str, Any] = dict(speakers.get(speaker, {}))
            if file_mic:
                extra["mic"] = file_mic
            transcript = corpus_dir / "txt" / speaker / f"{item_id}.txt"
            if transcript.is_file():
                extra["text"] = transcript.read_text(encoding="utf-8", errors="replace").strip()
            items.append(CorpusItem(path, item_id, speaker, extra))
    if not items and mics_seen:
        raise CorpusError(f"{audio_dir}: no VCTK files for {mic!r}; found {', '.join(sorted(mics_seen))}")
    return items


def _vctk_speaker_info(path: Path) -> dict[str, dict[str, str]]:
    """speaker-info.txt: ID AGE GENDER ACCENTS REGION; the old corpus writes 225, not p225."""
    if not path.is_file():
        return {}
    info = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 3:
            continue
        speaker = fields[0] if fields[0][0] in "ps" else f"p{fields[0]}"
        info[speaker] = {"age": fields[1], "gender": fields[2]}
        if len(fields) > 3:
            info[speaker]["accent"] = fields[3]
        if len(fields) > 4:
            info[speaker]["region"] = " ".join(fields[4:])
    return info


# --- DAPS -----------------------------------------------------------------------------------

_DAPS_NAME = re.compile(r"^([fm]\d+)_(script\d+)_(.+)$")


def _daps_dir(root: Path) -> Path | None:
    """The folder that holds the DAPS versions (clean/, produced/, ...): ``root`` or ``root/daps``."""
    for base in (root, root / "daps"):
        if base.is_dir() and any(_daps_files(p) for p in _subdirs(base)):
            return base
    return None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _daps_files(version_dir: Path) -> list[Path]:
    return [
        p
        for p in sorted(version_dir.glob("*.wav"))
        if not p.name.startswith(".") and (m := _DAPS_NAME.match(p.stem)) is not None and m.group(3) == version_dir.name
    ]


def _daps(root: Path, version: str) -> list[CorpusItem]:
    base = _daps_dir(root)
    if base is None:
        raise CorpusError(f"{root}: not a DAPS corpus (no <version>/f1_script1_<version>.wav files)")
    version_dir = base / version
    files = _daps_files(version_dir) if version_dir.is_dir() else []
    if not files:
        present = ", ".join(p.name for p in _subdirs(base) if _daps_files(p))
        raise CorpusError(f"{base}: DAPS version {version!r} not found; versions present: {present}")
    items = []
    for path in files:
        match = _DAPS_NAME.match(path.stem)
        if match is None:  # _daps_files keeps only the names that match
            raise RuntimeError(f"{path}: not a DAPS file name")
        speaker, script, _ = match.groups()
        items.append(CorpusItem(path, path.stem, speaker, {"script": script, "version": version}))
    return items


# --- LibriSpeech ----------------------------------------------------------------------------

_LIBRISPEECH_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def _librispeech_subsets(root: Path) -> list[Path]:
    """Subset folders (dev-clean, train-clean-100, ...) at ``root``, ``root/LibriSpeech``, or
    ``root`` itself when it is a subset: folders of <speaker>/<chapter>/*.trans.txt."""

    def is_subset(folder: Path) -> bool:
        return any(True for _ in folder.glob("[0-9]*/[0-9]*/*.trans.txt"))

    if is_subset(root):
        return [root]
    for base in (root / "LibriSpeech", root):
        if base.is_dir():
            subsets = [p for p in _subdirs(base) if is_subset(p)]
            if subsets:
                return subsets
    return []


def _librispeech(root: Path, subsets: Sequence[str] | None) -> list[CorpusItem]:
    found = _librispeech_subsets(root)
    if not found:
        raise CorpusError(f"{root}: not a LibriSpeech corpus (no <subset>/<speaker>/<chapter>/*.trans.txt)")
    if subsets is not None:
        missing = sorted(set(subsets) - {p.name for p in found})
        if missing:
            present = ", ".join(p.name for p in found)
            raise CorpusError(f"{root}: LibriSpeech subset(s) {', '.join(missing)} not found; present: {present}")
        found = [p for p in found if p.name in subsets]
    items = []
    for subset in found:
        for chapter_dir in sorted(subset.glob("[0-9]*/[0-9]*")):
            texts = _librispeech_transcripts(chapter_dir)
            for path in sorted(chapter_dir.glob("*.flac")):
                match = _LIBRISPEECH_NAME.match(path.stem)
                if match is None:
                    continue
                speaker, chapter, _ = match.groups()
                extra = {"subset": subset.name, "chapter": chapter}
                if path.stem in texts:
                    extra["text"] = texts[path.stem]
                items.append(CorpusItem(path, path.stem, speaker, extra))
    return items


def _librispeech_transcripts(chapter_dir: Path) -> dict[str, str]:
    texts = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
            utterance, _, text = line.strip().partition(" ")
            if utterance:
                texts[utterance] = text
    return texts

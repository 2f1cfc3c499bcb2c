"""DPAM triplet files: build them from judgments, read, write, and parse levels from DPAM file names.

This module is the one writer of triplet files (``python -m analysis export`` calls
``triplet_rows`` then ``write_triplets``).

Format (see shared/DESIGN.md): ``ref<TAB>perturbed<TAB>label[<TAB>extra...]`` with
label 0 = "same", 1 = "different". Paths are relative to an audio root that the
reader never requires to exist (the public DPAM files ship without audio).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from listening_test.dpam_triplets import triplet_line
from perturbations.files import atomic_write_bytes

from .judgments import JudgmentsError, judged_pairs

COLUMNS = ["ref", "perturbed", "label", "family", "line"]

# A DPAM level token: "0.0006", "2400", "-0.0" (seen in the public files), "1e-3".
_NUM = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_NUM_RE = re.compile(rf"^{_NUM}$")
_MULTI_RE = re.compile(rf"^(?:.*/)?(?P<kind>eq|combined)_(?P<set>\d+)/(?P<levels>(?:{_NUM}_)+)(?P<clip>.+?\.wav)$")
MULTI_LEVEL_COUNTS = {"eq": 3, "combined": 4}
_REVERB_RE = re.compile(rf"^reverb_(?P<set>\d+)/(?P<l1>{_NUM})_(?P<l2>{_NUM})_(?P<clip>.+?\.wav)_(?P<ir>.+)\.wav$")


def read_triplets(path: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a DPAM triplet file into a DataFrame.

    Columns: ref, perturbed (as written in the file), label (int 0/1), family (4th
    column stripped, "" if absent), line (1-based line number in the file). With
    ``audio_root`` two more columns, ref_audio and perturbed_audio, hold the joined
    paths; they are not checked for existence.

    Blank lines and lines whose first non-space character is '#' are skipped.
    Raises ValueError naming the file and line for malformed rows.
    """
    path = Path(path)
    rows: list[tuple[str, str, int, str, int]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for line_no, raw in enumerate(fh, start=1):
            text = raw.rstrip("\r\n")
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) < 3:
                raise ValueError(
                    f"{path}:{line_no}: expected at least 3 tab-separated columns "
                    f"(ref, perturbed, label), got {len(fields)}: {stripped[:80]!r}"
                )
            ref, pert, label_text = (f.strip() for f in fields[:3])
            if not ref or not pert:
                raise ValueError(f"{path}:{line_no}: empty path in column {1 if not ref else 2}")
            if label_text not in ("0", "1"):
                raise ValueError(f"{path}:{line_no}: label must be 0 (same) or 1 (different), got {label_text!r}")
            family = fields[3].strip() if len(fields) > 3 else ""
            rows.append((ref, pert, int(label_text), family, line_no))
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["label"] = df["label"].astype("int64")
    df["line"] = df["line"].astype("int64")
    if audio_root is not None:
        root = Path(audio_root)
        df["ref_audio"] = [str(root / p) for p in df["ref"]]
        df["perturbed_audio"] = [str(root / p) for p in df["perturbed"]]
    return df


def parse_dpam_levels(path: str | os.PathLike) -> dict | None:
    """Parse perturbation levels from a DPAM file name, or return None.

    - reverb: ``reverb_K/L1_L2_clip.wav_IRNAME.wav`` ->
      {"kind": "reverb", "set": K, "levels": (L1, L2), "drr_level": L1,
       "rt60_level": L2, "clip": clip, "ir": IRNAME}
    - eq: ``eq_K/G1_G2_G3_clip.wav`` (three band gains, DPAM's 0-100 scale) and
      combined: ``combined_K/L1_L2_L3_L4_clip.wav`` (four perturbation levels, 0-100) ->
      {"kind": "eq" | "combined", "set": K, "levels": (...), "level": None, "clip": clip}
    - linear: ``L[_L2[_L3]]_clip.wav`` (leading numeric tokens) ->
      {"kind": "linear", "levels": (...), "level": L if one token else None, "clip": clip}
    """
    text = str(path).replace("\\", "/")
    m = _REVERB_RE.search(text)
    if m is not None:
        l1, l2 = float(m["l1"]), float(m["l2"])
        return {
            "kind": "reverb",
            "set": int(m["set"]),
            "levels": (l1, l2),
            "drr_level": l1,
            "rt60_level": l2,
            "clip": m["clip"],
            "ir": m["ir"],
        }
    m = _MULTI_RE.search(text)
    if m is not None:
        multi = tuple(float(t) for t in m["levels"].rstrip("_").split("_"))
        if len(multi) == MULTI_LEVEL_COUNTS[m["kind"]]:
            return {"kind": m["kind"], "set": int(m["set"]), "levels": multi, "level": None, "clip": m["clip"]}
    name = text.rsplit("/", 1)[-1]
    tokens = name.split("_")
    levels: list[float] = []
    for tok in tokens:
        if not _NUM_RE.match(tok):
            break
        levels.append(float(tok))
    clip = "_".join(tokens[len(levels) :])
    # A level-free name or a name that is only numbers is not the DPAM pattern.
    if not levels or not clip.endswith(".wav") or clip == ".wav":
        return None
    return {"kind": "linear", "levels": tuple(levels), "level": levels[0] if len(levels) == 1 else None, "clip": clip}


def _normalise_rows(rows) -> list[tuple[str, str, int]]:
    if isinstance(rows, pd.DataFrame):
        missing = {"ref", "perturbed", "label"} - set(rows.columns)
        if missing:
            raise ValueError(f"write_triplets: DataFrame lacks columns {sorted(missing)}")
        items: Iterable = zip(rows["ref"], rows["perturbed"], rows["label"])
    else:
        items = ((r["ref"], r["perturbed"], r["label"]) if isinstance(r, Mapping) else tuple(r)[:3] for r in rows)
    out = []
    for i, (ref, pert, label) in enumerate(items):
        if not isinstance(label, str) and label in (0, 1):  # numpy ints, bools and 1.0 are labels too
            label = int(label)
        try:
            triplet_line(str(ref), str(pert), label)  # the format's rules, in their one home
        except ValueError as error:
            raise ValueError(f"write_triplets: row {i}: {error}") from None
        out.append((str(ref), str(pert), int(label)))
    return out


def write_triplets(rows, path: str | os.PathLike, header: str | None = None) -> Path:
    """Write ``(ref, perturbed, label)`` rows as a 3-column DPAM triplet file.

    ``rows`` is a DataFrame with ref/perturbed/label columns, or an iterable of
    tuples or mappings. Rows are sorted (ref, perturbed, label) so the same rows in
    any order give a byte-identical file; duplicates are kept (repeated judgments
    are data). ``header``: optional comment lines written first, each prefixed with
    "# " (readers skip them). The file is written to a temporary file and moved into place.
    """
    path = Path(path)
    lines = sorted(_normalise_rows(rows))
    head = "".join(f"# {h}\n" for h in header.splitlines()) if header else ""
    payload = (head + "".join(triplet_line(r, p, lab) for r, p, lab in lines)).encode("utf-8")
    return atomic_write_bytes(path, payload)


def triplet_rows(
    judgments: pd.DataFrame, kinds=("main",), relative_to: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, str]:
    """(ref, perturbed, label) rows for a DPAM triplet file and the audio root they are relative to.

    ``judgments``: the tidy table of ``analysis.judgments.load_judgments``; its pairs of
    the trial ``kinds`` with a same/different answer become rows (label 1 = "different"),
    in the table's order. Paths are relative to the experiments' audio root (the
    manifest's folder). With several experiments whose audio roots differ,
    ``relative_to`` must name one folder and every path is rewritten relative to it
    (POSIX, ``..`` where needed); the root returned is then that folder, resolved.

    Raises:
        JudgmentsError: the judgments come from several audio roots and ``relative_to`` is None.
    """
    sel = judged_pairs(judgments, kinds)
    roots = sorted(set(sel["audio_root"]))
    if relative_to is None:
        if len(roots) > 1:
            raise JudgmentsError(
                f"judgments come from {len(roots)} experiments with different audio roots ({', '.join(roots)}); "
                "pass --audio-root-relative-to DIR or --experiment SLUG"
            )
        root = roots[0] if roots else ""
        refs, perts = sel["reference_path"].tolist(), sel["test_path"].tolist()
    else:
        root = str(Path(relative_to).resolve())
        refs = [
            Path(os.path.relpath(Path(a) / p, root)).as_posix()
            for a, p in zip(sel["audio_root"], sel["reference_path"])
        ]
        perts = [
            Path(os.path.relpath(Path(a) / p, root)).as_posix() for a, p in zip(sel["audio_root"], sel["test_path"])
        ]
    out = pd.DataFrame({"ref": refs, "perturbed": perts, "label": sel["response_different"].astype("int64").to_numpy()})
    return out, root

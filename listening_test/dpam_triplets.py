"""The DPAM triplet line: one home for the format's writing rules.

Format (DESIGN.md "Formats"; Manocha et al., Interspeech 2020, and the public files in
``shared/dpam/``): ``ref_path<TAB>perturbed_path<TAB>label[<TAB>extra...]\\n`` with
``label`` 0 for "same" and 1 for "different"; readers ignore the extra columns. The
web app's download (``listening_test.export.triplets``) and the analysis writer
(``analysis.triplets.write_triplets``) both build their lines here; reading lives in
``analysis.triplets.read_triplets``.
"""

from __future__ import annotations


def triplet_line(ref: str, perturbed: str, label: int, *extra: object) -> str:
    """One DPAM triplet line, newline included.

    Args:
        ref, perturbed: audio paths relative to the audio root (no tab, newline or
            leading/trailing space: the format has no quoting).
        label: 0 ("same") or 1 ("different"); a bool or a string is refused.
        extra: further columns (e.g. the family), written with ``str``.

    Raises:
        ValueError: a path that is empty or holds a tab, a newline or edge spaces, a
            label that is not 0 or 1, or an extra column with a tab or newline.
    """
    for path in (ref, perturbed):
        if not isinstance(path, str) or not path or any(c in path for c in "\t\r\n") or path != path.strip():
            raise ValueError(f"triplet path {path!r} is empty or has tabs/newlines/edge spaces")
    if isinstance(label, (bool, str)) or label not in (0, 1):
        raise ValueError(f"triplet label must be 0 or 1, got {label!r}")
    columns = [ref, perturbed, str(int(label))]
    for value in extra:
        text = str(value)
        if any(c in text for c in "\t\r\n"):
            raise ValueError(f"triplet extra column {text!r} has a tab or newline")
        columns.append(text)
    return "\t".join(columns) + "\n"

"""Provenance shared by every jndlab output: manifests, checkpoints, reports.

``code_version()`` names the code that wrote a file; ``json_safe()`` makes a record strict JSON.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Any


def code_version() -> str:
    """``JNDLAB_CODE_VERSION`` if set, else the package version plus ``git describe``."""
    override = os.environ.get("JNDLAB_CODE_VERSION")
    if override:
        return override
    try:
        from importlib.metadata import PackageNotFoundError, version

        package = version("jndlab")
    except PackageNotFoundError:  # not installed: running from a checkout
        package = "0+unknown"
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+{described}" if described else package


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +inf, -inf) replaced by ``None``, recursively.

    Strict JSON (RFC 8259) has no NaN or Infinity; Python's ``json`` writes them as bare
    tokens other readers reject. A NaN (e.g. the ROC-AUC of a one-class set) becomes ``null``.
    Dicts keep their keys; lists and tuples become lists; everything else is returned as is
    (numpy floats are ``float`` subclasses and are handled). Raises nothing.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj

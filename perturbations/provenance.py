"""Provenance shared by every jndlab output: manifests, checkpoints, reports."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


def code_version() -> str:
    """``JNDLAB_CODE_VERSION`` if set, else the package version plus ``git describe``."""
    override = os.environ.get("JNDLAB_CODE_VERSION")
    if override:
        return override
    try:
        from importlib.metadata import version

        package = version("jndlab")
    except Exception:  # not installed: running from a checkout
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

"""The one place the web layer touches the pure procedures package."""
from __future__ import annotations

from .procedures import make_procedure, restore_procedure

__all__ = ["make_procedure", "restore_procedure"]

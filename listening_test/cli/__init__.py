"""The command line: ``python -m listening_test ...`` and ``flask --app listening_test ...``.

``commands``: ``db`` (Flask-Migrate), ``experiment ...``, ``serve``, the top-level group
(``main``) and ``register`` (the commands on ``app.cli``); ``demo``: ``demo``.
"""
from __future__ import annotations

from .commands import main, register

__all__ = ["main", "register"]

"""The session flow's pure core: plain functions on plain data, no database, no Flask.

- ``session``: the data (``FlowSession``, ``OpenTrial``, ``Study``);
- ``stages``: the stage machine (``step_target``, ``enter``, ``after_answer``, ``after_void``);
- ``answers``: which trial an answer may go to, whether it fits, what it scores;
- ``tally``: the headphone check's tally and verdict;
- ``trials``: the stimulus set (``Ladders``), tracks and the choice and building of the
  next trial, for same/different tests; ``ab``: the A/B preference test's trials;
- ``payload``: API.md's ``State`` and ``trial`` objects.

``listening_test.store`` reads a session from the database, calls these, and writes
what they changed; the web layer (``listening_test.web``) calls the store.
"""

from __future__ import annotations

from .session import DESIGNS, FlowSession, OpenTrial, Study, StudyData
from .stages import ORDER, STAGES, TERMINAL_STAGES, TRIAL_STAGES, Outcome

__all__ = [
    "DESIGNS",
    "ORDER",
    "STAGES",
    "TERMINAL_STAGES",
    "TRIAL_STAGES",
    "FlowSession",
    "OpenTrial",
    "Outcome",
    "Study",
    "StudyData",
]

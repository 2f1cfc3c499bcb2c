"""The plain data the flow core works on: a session, its open trial, and the study.

``FlowSession`` is what the stage machine reads and changes of a session; the store's
``SessionState`` extends it with what the database needs (public id, platform,
which columns changed). ``Study`` is what the core reads of an experiment: its
settings, its test type's design, its stimulus set and its length estimate (the
store serves them from per-process caches; tests pass a ``StudyData``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..flow_config import FlowConfig
from .ab import AB_PREFERENCE
from .trials import SAME_DIFFERENT, Ladders, TrackRow, TrialDesign

DESIGNS: dict[str, TrialDesign] = {design.test_type: design for design in (SAME_DIFFERENT, AB_PREFERENCE)}


@dataclass(eq=False)
class FlowSession:
    """A session as the stage machine sees it.

    ``schedule_state`` holds the flow's counters (``served_in_stage``, ``catches``,
    ``last_track``, the headphone check's tally, ``expected_left``, ...); it is
    replaced, never changed in place, so that a store can see it changed.
    ``tracks`` is None until the store has read them (or made them).
    """

    id: int
    seed: int
    stage: str = "consent"
    schedule_state: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 0
    screening_passed: bool | None = None
    completion_code: str | None = None
    tracks: list[TrackRow] | None = None


@dataclass
class OpenTrial:
    """A stored trial, as much of it as serving and answering need.

    ``tokens``: its clips' audio tokens in slot order; when they were not read (an
    answer needs only their number), ``clip_count`` is how many clips it has.
    ``previous_answer``: the stored answer of an answered trial, when the store read it.
    """

    id: int
    trial_index: int
    kind: str
    nonce: str
    answered: bool
    spec: dict[str, Any]
    tokens: list[str]
    expected_answer: str | None = None
    track_id: int | None = None
    level: float | None = None
    previous_answer: Any = None
    clip_count: int | None = None

    @property
    def n_clips(self) -> int:
        """How many clips the trial plays."""
        return len(self.tokens) if self.clip_count is None else self.clip_count


class Study(Protocol):
    """What the flow core reads of an experiment (all of it fixed at creation but the
    stimuli found faulty, which ``ladders.faulty`` lists)."""

    @property
    def flow(self) -> FlowConfig: ...

    @property
    def design(self) -> TrialDesign: ...

    @property
    def ladders(self) -> Ladders: ...

    @property
    def estimate(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class StudyData:
    """A ``Study`` held in plain fields (tests, offline runs)."""

    flow: FlowConfig
    design: TrialDesign
    ladders: Ladders
    estimate: Mapping[str, Any] | None = None

"""An experiment's flow settings (``experiments.config``), with defaults and validation.

Kept apart from the models so that the CLI, the admin API and the session flow
read one definition of every knob.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .headphone import ScreeningConfig
from .models import TEST_TYPES
from .procedures import make_procedure

KNOWN_KEYS = {
    "references_per_participant", "families_per_participant", "catch_rate",
    "catch_obvious_share", "practice_trials", "require_full_playback",
    "screening", "max_main_trials",
}


@dataclass
class FlowConfig:
    references_per_participant: int = 2
    families_per_participant: int | None = None  # None: every family in the manifest
    catch_rate: float = 0.1  # share of main-phase trials that are catch trials
    catch_obvious_share: float = 0.5  # of catch trials, the share that are "obvious" pairs
    practice_trials: int = 4  # with feedback; alternate identical / obvious pairs
    require_full_playback: bool = True  # a hint for the front end
    max_main_trials: int = 400  # safety cap on a session's main phase, catch trials included
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "FlowConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - KNOWN_KEYS)
        if unknown:
            raise ValueError(f"unknown experiment config key(s) {unknown}; valid: {sorted(KNOWN_KEYS)}")
        screening = ScreeningConfig.from_dict(data.pop("screening", None))
        cfg = cls(screening=screening, **data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.references_per_participant < 1:
            raise ValueError("references_per_participant must be >= 1")
        if self.families_per_participant is not None and self.families_per_participant < 1:
            raise ValueError("families_per_participant must be >= 1 or null")
        if not 0.0 <= self.catch_rate < 1.0:
            raise ValueError("catch_rate must be in [0, 1)")
        if not 0.0 <= self.catch_obvious_share <= 1.0:
            raise ValueError("catch_obvious_share must be in [0, 1]")
        if self.practice_trials < 0:
            raise ValueError("practice_trials must be >= 0")
        if self.max_main_trials < 1:
            raise ValueError("max_main_trials must be >= 1")

    def validate_for(
        self, procedure: str, procedure_config: dict[str, Any],
        ladders: dict[tuple[str, str], list[float]], test_type: str,
    ) -> None:
        """Check the settings against a stimulus set before anything is stored."""
        if test_type not in TEST_TYPES:
            raise ValueError(f"unknown test type {test_type!r}; choose from {list(TEST_TYPES)}")
        if test_type != "same_different":
            raise ValueError(f"test type {test_type!r} is not implemented yet")
        if not ladders:
            raise ValueError("the stimulus set has no perturbed stimuli")
        for key, levels in ladders.items():
            if len(levels) < 2:
                raise ValueError(f"ladder {key} has {len(levels)} level(s); a procedure needs at least 2")
        # Building one procedure checks the name and its options.
        make_procedure(procedure, next(iter(ladders.values())), **procedure_config)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["screening"]["tests"] = list(self.screening.tests)
        return out

"""An experiment's flow settings (``experiments.config``), with defaults and validation.

Kept apart from the models so that the CLI, the admin API and the session flow
read one definition of every knob.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .headphone import ScreeningConfig
from .models import TEST_TYPES
from .procedures import make_procedure, paired, schedule

KNOWN_KEYS = {
    "references_per_participant", "families_per_participant", "catch_rate",
    "catch_obvious_share", "practice_trials", "require_full_playback",
    "screening", "max_main_trials", "anchor_system",
}
# A/B catch trials: the clean reference against the anchor; the clean side must win.
AB_CATCH_KIND = "anchor"
# The procedure each test type uses when none is named.
DEFAULT_PROCEDURE = {"same_different": "bayesian", "ab_preference": paired.PROCEDURE_NAME}


@dataclass
class FlowConfig:
    references_per_participant: int = 2
    families_per_participant: int | None = None  # None: every family in the manifest
    catch_rate: float = 0.1  # share of main-phase trials that are catch trials
    catch_obvious_share: float = 0.5  # of catch trials, the share that are "obvious" pairs
    practice_trials: int = 4  # with feedback; alternate identical / obvious pairs
    require_full_playback: bool = True  # a hint for the front end
    max_main_trials: int = 400  # safety cap on a session's main phase, catch trials included
    # A/B tests: the system (e.g. the unprocessed noisy input) that catch and practice
    # trials set against the clean reference; it is never compared with the others.
    anchor_system: str | None = None
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
        if self.anchor_system is not None and not isinstance(self.anchor_system, str):
            raise ValueError("anchor_system must be a system name or null")

    def validate_for(
        self, procedure: str, procedure_config: dict[str, Any],
        ladders: dict[tuple[str, str], list[float]], test_type: str,
    ) -> None:
        """Check the settings against a stimulus set before anything is stored."""
        if test_type not in TEST_TYPES:
            raise ValueError(f"unknown test type {test_type!r}; choose from {list(TEST_TYPES)}")
        if test_type == "ab_preference":
            self._validate_ab(procedure, procedure_config, ladders)
            return
        if procedure == paired.PROCEDURE_NAME:
            raise ValueError(f"procedure {procedure!r} is for ab_preference tests; a same/different test "
                             "needs an adaptive procedure")
        if self.anchor_system is not None:
            raise ValueError("anchor_system is an ab_preference setting")
        if not ladders:
            raise ValueError("the stimulus set has no perturbed stimuli")
        for key, levels in ladders.items():
            if len(levels) < 2:
                raise ValueError(f"ladder {key} has {len(levels)} level(s); a procedure needs at least 2")
        # Building one procedure checks the name and its options.
        make_procedure(procedure, next(iter(ladders.values())), **procedure_config)

    def _validate_ab(self, procedure: str, procedure_config: dict[str, Any],
                     ladders: dict[tuple[str, str], list[float]]) -> None:
        if procedure != paired.PROCEDURE_NAME:
            raise ValueError(f"an ab_preference test uses procedure {paired.PROCEDURE_NAME!r}, not {procedure!r}")
        paired.PairedConfig.from_dict(procedure_config)
        if self.families_per_participant is not None:
            raise ValueError("families_per_participant is a same/different setting; an A/B participant "
                             "judges every system pair of each item")
        systems_by_item: dict[str, set[str]] = {}
        for (item, system), levels in ladders.items():
            if len(levels) != 1:
                raise ValueError(f"item {item!r} has {len(levels)} outputs of system {system!r}; expected one")
            systems_by_item.setdefault(item, set()).add(system)
        paired.check_design(systems_by_item, self.anchor_system,
                            needs_anchor=self.catch_rate > 0 or self.practice_trials > 0)

    def catch_shares(self, test_type: str) -> dict[str, float]:
        """Catch kinds and their shares for ``test_type`` (see ``procedures.schedule``)."""
        if test_type == "ab_preference":
            return {AB_CATCH_KIND: 1.0}
        return schedule.catch_shares(self.catch_obvious_share)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["screening"]["tests"] = list(self.screening.tests)
        return out

"""An experiment's flow settings (``experiments.config``), with defaults and validation.

Kept apart from the models so that the CLI, the admin API and the session flow
read one definition of every knob.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .headphone import TESTS as SCREENING_TESTS
from .headphone import ScreeningConfig
from .procedures import PROCEDURES, checks, make_procedure, paired, schedule

KNOWN_KEYS = {
    "references_per_participant",
    "families_per_participant",
    "catch_rate",
    "catch_obvious_share",
    "practice_trials",
    "require_full_playback",
    "screening",
    "max_main_trials",
    "anchor_system",
}
# Upper bounds of the settings: far above any sensible study, low enough that a typo
# (practice_trials 1e9) cannot make a session that never ends.
MAX_REFERENCES = 1000
MAX_FAMILIES = 100
MAX_CATCH_RATE = 0.9  # at most 9 catch trials to 1 adaptive one
MAX_PRACTICE_TRIALS = 100
MAX_MAIN_TRIALS = 5000
MAX_SCREENING_TRIALS = 50  # per screening test
SCREENING_KEYS = {"tests", "trials_per_test", "min_correct", "rule"}
# A/B catch trials: the clean reference against the anchor; the clean side must win.
AB_CATCH_KIND = "anchor"
# The test types (``experiments.test_type``; ``flow.DESIGNS`` has their trials).
TEST_TYPES = ("same_different", "ab_preference")
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
    def from_dict(cls, data: dict[str, Any] | None) -> FlowConfig:
        """Build and check the settings (``experiments.config``).

        Raises:
            ValueError: an unknown key, or a value of the wrong type or out of its range;
                the message names the setting (``screening.trials_per_test``, ...).
        """
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"the flow config must be a JSON object, got {data!r}")
        data = dict(data or {})
        unknown = sorted(set(data) - KNOWN_KEYS, key=str)
        if unknown:
            raise ValueError(f"unknown experiment config key(s) {unknown}; valid: {sorted(KNOWN_KEYS)}")
        screening = ScreeningConfig.from_dict(_screening_settings(data.pop("screening", None)))
        cfg = cls(screening=screening, **data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Type and range of every setting; raises ValueError naming it (integers must be integers)."""
        o = "config"
        self.references_per_participant = checks.integer(
            o, "references_per_participant", self.references_per_participant, 1, MAX_REFERENCES
        )
        self.families_per_participant = checks.integer(
            o, "families_per_participant", self.families_per_participant, 1, MAX_FAMILIES, allow_none=True
        )
        self.catch_rate = checks.real(o, "catch_rate", self.catch_rate, 0.0, MAX_CATCH_RATE)
        self.catch_obvious_share = checks.real(o, "catch_obvious_share", self.catch_obvious_share, 0.0, 1.0)
        self.practice_trials = checks.integer(o, "practice_trials", self.practice_trials, 0, MAX_PRACTICE_TRIALS)
        self.require_full_playback = checks.boolean(o, "require_full_playback", self.require_full_playback)
        self.max_main_trials = checks.integer(o, "max_main_trials", self.max_main_trials, 1, MAX_MAIN_TRIALS)
        if self.anchor_system is not None and not isinstance(self.anchor_system, str):
            raise ValueError(f"config anchor_system must be a system name or null, got {self.anchor_system!r}")

    def validate_for(
        self,
        procedure: str,
        procedure_config: dict[str, Any],
        ladders: dict[tuple[str, str], list[float]],
        test_type: str,
    ) -> None:
        """Check the settings against a stimulus set before anything is stored."""
        if test_type not in TEST_TYPES:
            raise ValueError(f"unknown test type {test_type!r}; choose from {list(TEST_TYPES)}")
        if test_type == "ab_preference":
            self._validate_ab(procedure, procedure_config, ladders)
            return
        if procedure == paired.PROCEDURE_NAME:
            raise ValueError(
                f"procedure {procedure!r} is for ab_preference tests; a same/different test needs an adaptive procedure"
            )
        if self.anchor_system is not None:
            raise ValueError("anchor_system is an ab_preference setting")
        if not ladders:
            raise ValueError("the stimulus set has no perturbed stimuli")
        if not isinstance(procedure_config, dict):
            raise ValueError(f"procedure_config must be a JSON object, got {procedure_config!r}")  # noqa: TRY004 (callers catch ValueError)
        if not isinstance(procedure, str) or procedure not in PROCEDURES:
            raise ValueError(f"unknown procedure {procedure!r}; valid: {', '.join(sorted(PROCEDURES))}")
        # Build the procedure on EVERY ladder (a participant may get any of them): a setting that
        # cannot work on one ladder (too few rungs, a start level or range outside it, a step
        # longer than it) is refused now, naming the setting and the ladder, not at a 500 later.
        fewest: list[int] = []
        built: dict[tuple[float, ...], int] = {}
        for (reference, family), levels in sorted(ladders.items()):
            where = (
                f"ladder reference={reference!r} family={family!r} ({len(levels)} level(s), "
                f"{levels[0]:g}..{levels[-1]:g})"
                if levels
                else f"ladder reference={reference!r} family={family!r}"
            )
            if len(levels) < 2:
                raise ValueError(f"{where}: a procedure needs at least 2 levels")
            key = tuple(levels)
            if key not in built:
                try:
                    proc = make_procedure(procedure, levels, **procedure_config)
                except (ValueError, TypeError, ArithmeticError) as error:  # the last two: a check we lack
                    raise ValueError(f"procedure_config for {procedure} on {where}: {error}") from None
                built[key] = int(getattr(proc, "fewest_trials", 1))
            fewest.append(built[key])
        n_refs = len({r for r, _ in ladders})
        n_fams = len({f for _, f in ladders})
        tracks = min(self.references_per_participant, n_refs) * min(self.families_per_participant or n_fams, n_fams)
        need = tracks * min(fewest)
        if self.max_main_trials < need:
            raise ValueError(
                f"config max_main_trials={self.max_main_trials} is below the {need} main trials a session's {tracks} "
                f"track(s) take at the least ({procedure} needs {min(fewest)} a track): the cap would end every "
                "session before its tracks finish; raise max_main_trials or lower references_per_participant"
            )

    def _validate_ab(
        self, procedure: str, procedure_config: dict[str, Any], ladders: dict[tuple[str, str], list[float]]
    ) -> None:
        if procedure != paired.PROCEDURE_NAME:
            raise ValueError(f"an ab_preference test uses procedure {paired.PROCEDURE_NAME!r}, not {procedure!r}")
        if self.families_per_participant is not None:
            raise ValueError(
                "families_per_participant is a same/different setting; an A/B participant "
                "judges every system pair of each item"
            )
        systems_by_item: dict[str, set[str]] = {}
        for (item, system), levels in ladders.items():
            if len(levels) != 1:
                raise ValueError(f"item {item!r} has {len(levels)} outputs of system {system!r}; expected one")
            systems_by_item.setdefault(item, set()).add(system)
        pairs = paired.check_design(
            systems_by_item, self.anchor_system, needs_anchor=self.catch_rate > 0 or self.practice_trials > 0
        )
        repeats = paired.PairedConfig.from_dict(procedure_config).repeats
        need = min(self.references_per_participant, len(systems_by_item)) * len(pairs) * repeats
        if self.max_main_trials < need:
            raise ValueError(
                f"config max_main_trials={self.max_main_trials} is below the {need} A/B trials a session takes "
                f"({len(pairs)} system pair(s) x {repeats} repeat(s) per item): the cap would end every session "
                "before it finishes; raise max_main_trials or lower references_per_participant"
            )

    def catch_shares(self, test_type: str) -> dict[str, float]:
        """Catch kinds and their shares for ``test_type`` (see ``procedures.schedule``)."""
        if test_type == "ab_preference":
            return {AB_CATCH_KIND: 1.0}
        return schedule.catch_shares(self.catch_obvious_share)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["screening"]["tests"] = list(self.screening.tests)
        return out


def _screening_settings(data: Any) -> dict[str, Any] | None:
    """Check ``config["screening"]`` as a whole before ``ScreeningConfig`` reads it.

    Raises:
        ValueError: not an object, an unknown key, a test named twice or unknown, a count
            that is not an integer in range; the message names ``screening.<key>``.
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"config screening must be a JSON object or null, got {data!r}")  # noqa: TRY004
    unknown = sorted(set(data) - SCREENING_KEYS, key=str)
    if unknown:
        raise ValueError(f"unknown config screening key(s) {unknown}; valid: {sorted(SCREENING_KEYS)}")
    out = dict(data)
    if "tests" in out:
        tests = checks.sequence("config", "screening.tests", out["tests"], 0, len(SCREENING_TESTS))
        for i, name in enumerate(tests):
            checks.choice("config", f"screening.tests[{i}]", name, SCREENING_TESTS)
        if len(set(tests)) != len(tests):
            raise ValueError(f"config screening.tests names a test twice: {tests!r}")
        out["tests"] = tests
    trials = checks.integer(
        "config",
        "screening.trials_per_test",
        out.get("trials_per_test", ScreeningConfig.trials_per_test),
        1,
        MAX_SCREENING_TRIALS,
    )
    if "trials_per_test" in out:
        out["trials_per_test"] = trials
    if "min_correct" in out:
        out["min_correct"] = checks.integer("config", "screening.min_correct", out["min_correct"], 0, trials)
    if "rule" in out:
        out["rule"] = checks.choice("config", "screening.rule", out["rule"], ("all", "any"))
    return out

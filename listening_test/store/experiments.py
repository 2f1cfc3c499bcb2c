"""An experiment as the session flow reads it, cached per process.

An experiment's settings and stimulus set are immutable after creation (only
``status`` changes, and only landing reads it), so each process reads them once:
``experiment_info`` (the settings), ``ladders_for`` (the stimulus set, with the faults
found so far: ``mark_faulty``) and ``experiment_estimate`` (the length estimate). The
caches live in ``current_app.extensions``, one set per app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, select, update

from perturbations.manifest import REFERENCE_FAMILY

from .. import estimates, schema
from ..db import connection, db
from ..errors import ApiError
from ..flow.session import DESIGNS
from ..flow.trials import Ladders, TrialDesign
from ..flow_config import FlowConfig
from ..models import Experiment  # the ORM, for landing and the admin pages

STIMULI = schema.stimuli
EXPERIMENTS = schema.experiments
REASON_CHARS = 2000  # trials.voided_reason, stimuli.fault_reason


@dataclass(frozen=True)
class ExperimentInfo:
    """The immutable part of an experiment (everything but ``status``); the flow core's
    ``Study`` (its ladders and estimate come from this process's caches)."""

    id: int
    slug: str
    test_type: str
    procedure: str
    procedure_config: dict[str, Any]
    flow: FlowConfig
    prolific_completion_code: str | None
    prolific_screened_out_code: str | None

    @property
    def design(self) -> TrialDesign:
        return DESIGNS[self.test_type]

    @property
    def ladders(self) -> Ladders:
        return ladders_for(self.id)

    @property
    def estimate(self) -> dict[str, Any] | None:
        return experiment_estimate(self.id)


def experiment_by_slug(slug: str) -> Experiment | None:
    """The ORM experiment named ``slug`` (None when there is none)."""
    return db.session.scalar(select(Experiment).where(Experiment.slug == slug))


def find_experiment(slug: str) -> Experiment:
    """The ORM experiment named ``slug``.

    Raises:
        ApiError: 404 ``experiment_not_found``.
    """
    experiment = experiment_by_slug(slug)
    if experiment is None:
        raise ApiError(404, "experiment_not_found", f"no experiment {slug!r}")
    return experiment


def _cache(name: str) -> dict[int, Any]:
    cache: dict[int, Any] = current_app.extensions.setdefault(name, {})
    return cache


_EXPERIMENT = select(
    EXPERIMENTS.c.id,
    EXPERIMENTS.c.slug,
    EXPERIMENTS.c.test_type,
    EXPERIMENTS.c.procedure,
    EXPERIMENTS.c.procedure_config,
    EXPERIMENTS.c.config,
    EXPERIMENTS.c.prolific_completion_code,
    EXPERIMENTS.c.prolific_screened_out_code,
).where(EXPERIMENTS.c.id == bindparam("experiment_id"))


def experiment_info(experiment_id: int) -> ExperimentInfo:
    """The experiment's settings, read once per process (one SELECT).

    Raises:
        sqlalchemy.exc.NoResultFound: no experiment ``experiment_id``.
        ValueError: its stored flow settings do not validate (``FlowConfig.from_dict``).
    """
    cache = _cache("jndlab_experiments")
    info: ExperimentInfo | None = cache.get(experiment_id)
    if info is None:
        e = connection().execute(_EXPERIMENT, {"experiment_id": experiment_id}).one()
        info = ExperimentInfo(
            e.id,
            e.slug,
            e.test_type,
            e.procedure,
            dict(e.procedure_config or {}),
            FlowConfig.from_dict(e.config),
            e.prolific_completion_code,
            e.prolific_screened_out_code,
        )
        cache[experiment_id] = info
    return info


_LADDER_ROWS = select(
    STIMULI.c.id, STIMULI.c.stimulus_id, STIMULI.c.reference, STIMULI.c.family, STIMULI.c.level, STIMULI.c.fault_reason
).where(STIMULI.c.experiment_id == bindparam("experiment_id"))


def ladders_for(experiment_id: int) -> Ladders:
    """The experiment's stimulus set, read once per process (one SELECT); a stimulus set
    never changes after creation, only the faults found in it (``mark_faulty``)."""
    cache = _cache("jndlab_ladders")
    if experiment_id not in cache:
        rows = db.session.execute(_LADDER_ROWS, {"experiment_id": experiment_id}).all()
        cache[experiment_id] = Ladders.from_rows([tuple(r) for r in rows], REFERENCE_FAMILY)
    ladders: Ladders = cache[experiment_id]
    return ladders


_MARK_FAULTY = (
    update(STIMULI)
    .where(STIMULI.c.id == bindparam("sid"), STIMULI.c.fault_reason.is_(None))
    .values(fault_reason=bindparam("reason"), fault_at=bindparam("now"))
)
_FAULTY = select(STIMULI.c.id, STIMULI.c.fault_reason).where(
    STIMULI.c.experiment_id == bindparam("experiment_id"), STIMULI.c.fault_reason.is_not(None)
)


def mark_faulty(experiment_id: int, reasons: Mapping[int, str], now: datetime) -> Ladders:
    """Take stimuli (``stimuli.id -> reason``) out of rotation for the whole experiment:
    recorded on their rows (the first reason stays, cut to ``REASON_CHARS``), and this
    process's ladders learn every fault recorded so far (other processes' included).
    Other processes learn them when they load the ladders, or at their own next fault
    (each process serves a faulty stimulus at most once more). Returns the updated ladders."""
    conn = connection()
    if reasons:
        conn.execute(
            _MARK_FAULTY, [{"sid": sid, "reason": reason[:REASON_CHARS], "now": now} for sid, reason in reasons.items()]
        )
    faulty = {sid: reason for sid, reason in conn.execute(_FAULTY, {"experiment_id": experiment_id}).all()}
    ladders = ladders_for(experiment_id).with_faults(faulty)
    _cache("jndlab_ladders")[experiment_id] = ladders
    return ladders


def experiment_estimate(experiment_id: int) -> dict[str, Any] | None:
    """The stored length estimate of an experiment, cached per process (it never changes);
    computed (not stored) for an experiment that has none. None when it cannot be computed."""
    cache = _cache("jndlab_estimates")
    if experiment_id not in cache:
        estimate = connection().scalar(select(EXPERIMENTS.c.estimate).where(EXPERIMENTS.c.id == experiment_id))
        if estimate is None:  # created without one (e.g. by create_experiment alone): compute, keep in memory
            try:
                estimate = estimates.estimate_for_experiment(db.session, db.session.get(Experiment, experiment_id))
            except (ValueError, TypeError):
                estimate = None
        cache[experiment_id] = estimate
    stored: dict[str, Any] | None = cache[experiment_id]
    return stored


def session_trials_left(
    experiment_id: int, tracks: Sequence[Any], schedule_state: Mapping[str, Any] | None = None
) -> float | None:
    """``estimates.trials_left`` for a session of ``experiment_id`` (its cached estimate and
    ``max_main_trials`` cap); see there for ``tracks`` and ``schedule_state``."""
    try:
        cap: int | None = experiment_info(experiment_id).flow.max_main_trials
    except Exception:  # noqa: BLE001 - no cap known is a safe answer for a progress figure
        cap = None
    return estimates.trials_left(experiment_estimate(experiment_id), tracks, schedule_state, cap)

"""The A/B preference test's trials: "which of A and B sounds closer to the reference?".

A track is one (clean item, system pair) with ``repeats`` presentations; a trial
plays the clean reference, then the two systems' outputs as clips A and B, in an
order fixed when the session's tracks are made (``procedures.paired``: balanced
within each participant). Catch and practice trials set the clean clip itself
against the anchor system (the unprocessed input): the clean side must win.

Storage (see API.md): ``trials.spec = {"systems": [A, B], "stimuli": [id A, id B]}``,
``test_stimulus_id`` = clip A, ``family`` = the pair key, clips in slots 0
(reference), 1 (A), 2 (B); answers "A" or "B". Pure, as ``flow.trials``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..flow_config import AB_CATCH_KIND, FlowConfig
from ..procedures import paired
from .trials import (
    Ladders,
    NewTrial,
    TrackPlan,
    TrackRow,
    TrialDesign,
    catch_pool,
    least_used,
    new_trial,
    session_rng,
    track_rng,
    usage_by,
)

CHOICES = ("A", "B")


def plan_tracks(
    seed: int,
    ladders: Ladders,
    usage: Mapping[tuple[str, str], int],
    flow: FlowConfig,
    procedure: str,
    procedure_config: Mapping[str, Any],
) -> list[TrackPlan]:
    """This participant's items (least-used first; items with a faulty stimulus only when
    every item has one) times every system pair, orders counterbalanced.

    Raises ValueError for bad ``procedure_config`` (``paired.PairedConfig``).
    """
    rng = track_rng(seed)
    items = sorted(
        {item for item, _ in ladders.rungs if ladders.item_healthy(item)}  # faulty: out of rotation
        or {item for item, _ in ladders.rungs}
    )
    systems = sorted({system for _, system in ladders.rungs})
    pairs = paired.system_pairs(systems, flow.anchor_system)
    repeats = paired.PairedConfig.from_dict(dict(procedure_config)).repeats
    chosen = least_used(items, usage_by(usage, 0), flow.references_per_participant, rng)
    orientations = paired.assign_orientations(len(chosen) * len(pairs), repeats, rng)
    return [
        TrackPlan(
            item,
            paired.pair_key(*pair),
            {"name": paired.PROCEDURE_NAME, "repeats": repeats, "a_first": orientations[i]},
            False,
        )
        for i, (item, pair) in enumerate((item, pair) for item in chosen for pair in pairs)
    ]


def _three_clip_trial(
    session,
    kind: str,
    item: str,
    systems: tuple[str, str],
    stimulus_ids: list[int],
    ladders: Ladders,
    track=None,
    family: str | None = None,
    a_is_reference: bool | None = None,
    expected: str | None = None,
) -> NewTrial:
    ref_id = ladders.references[item]
    trial = new_trial(
        session,
        kind,
        track_id=track.id if track is not None else None,
        reference_stimulus_id=ref_id,
        test_stimulus_id=stimulus_ids[0],
        family=family,
        level=None,
        a_is_reference=a_is_reference,
        expected_answer=expected,
        spec={"systems": list(systems), "stimuli": list(stimulus_ids)},
    )
    trial.clips = [{"stimulus_id": ref_id}, {"stimulus_id": stimulus_ids[0]}, {"stimulus_id": stimulus_ids[1]}]
    return trial


def _output_id(ladders: Ladders, item: str, system: str) -> int:
    return ladders.rungs[(item, system)][0][1]


def track_trial(session, track: TrackRow, ladders: Ladders, rng) -> NewTrial | None:
    """The track's next presentation, in its fixed order; None after its ``repeats``."""
    state = track.procedure_state
    if track.n_trials >= int(state["repeats"]):
        return None
    systems = paired.presented(paired.split_pair_key(track.family), bool(state["a_first"][track.n_trials]))
    ids = [_output_id(ladders, track.reference, s) for s in systems]
    return _three_clip_trial(session, "main", track.reference, systems, ids, ladders, track=track, family=track.family)


def _anchor_trial(
    session, kind: str, item: str, ladders: Ladders, flow: FlowConfig, rng: np.random.Generator
) -> NewTrial:
    """The clean clip against the anchor, sides at random; the clean side is the right answer.

    Raises ValueError when the study names no ``anchor_system`` (creation refuses that
    for a study with catch or practice trials, ``FlowConfig.validate_for``)."""
    anchor = flow.anchor_system
    if anchor is None:
        raise ValueError("an A/B study's catch and practice trials need config anchor_system")
    clean_is_a = bool(rng.integers(0, 2))  # chosen here, never by the client
    clean = (paired.REFERENCE_SYSTEM, ladders.references[item])
    noisy = (anchor, _output_id(ladders, item, anchor))
    first, second = (clean, noisy) if clean_is_a else (noisy, clean)
    return _three_clip_trial(
        session,
        kind,
        item,
        (first[0], second[0]),
        [first[1], second[1]],
        ladders,
        family=paired.pair_key(paired.REFERENCE_SYSTEM, anchor),
        a_is_reference=clean_is_a,
        expected="A" if clean_is_a else "B",
    )


def catch_trial(session, kind: str, track: TrackRow, ladders: Ladders, flow: FlowConfig, rng) -> NewTrial:
    """An anchor trial on the track's item. Raises ValueError for another catch kind."""
    if kind != f"catch_{AB_CATCH_KIND}":
        raise ValueError(f"an A/B test has no catch kind {kind!r}")
    return _anchor_trial(session, kind, track.reference, ladders, flow, rng)


def practice_trial(
    session, tracks: list[TrackRow], ladders: Ladders, flow: FlowConfig, served_in_stage: int
) -> NewTrial:
    """An anchor trial on a healthy track's item. Raises ValueError when ``tracks`` is empty."""
    rng = session_rng(session)
    pool = catch_pool(tracks, ladders) or tracks  # faulty stimuli: out of rotation
    track = pool[int(rng.integers(0, len(pool)))]
    return _anchor_trial(session, "practice", track.reference, ladders, flow, rng)


def record_main_answer(track: TrackRow, trial, answer: str) -> None:
    """Nothing adapts: count the presentation, close the track after its repeats."""
    track.n_trials += 1
    track.finished = track.n_trials >= int(track.procedure_state["repeats"])


AB_PREFERENCE = TrialDesign(
    test_type="ab_preference",
    choices=CHOICES,
    clip_labels=("Reference", "A", "B"),
    plan_tracks=plan_tracks,
    practice_trial=practice_trial,
    catch_trial=catch_trial,
    track_trial=track_trial,
    record_main_answer=record_main_answer,
)

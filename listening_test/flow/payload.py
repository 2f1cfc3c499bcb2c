"""The ``State`` and ``trial`` objects of API.md, from plain data.

Nothing about a trial that would give the answer away is ever put here: not its kind
(catch trials look like main trials), level, family, nor which clip is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..flow_config import FlowConfig
from .answers import SCREENING_CHOICES
from .session import FlowSession, OpenTrial
from .stages import answered_count
from .trials import SAME_DIFFERENT, TrialDesign

AudioUrl = Callable[[str], str]  # audio token -> the URL the page fetches the clip from


def trial_payload(trial: OpenTrial, audio_url: AudioUrl, design: TrialDesign = SAME_DIFFERENT) -> dict[str, Any]:
    """API.md's ``trial``: id, nonce, index, phase, prompt, choices, clips (label, url)."""
    phase = "screening" if trial.kind == "screening" else ("practice" if trial.kind == "practice" else "main")
    if trial.kind == "screening":
        labels = [str(i + 1) for i in range(len(trial.tokens))]
        choices, prompt = list(SCREENING_CHOICES), trial.spec["test"]
    else:
        labels, choices, prompt = list(design.clip_labels), list(design.choices), design.test_type
    return {
        "id": trial.id,
        "nonce": trial.nonce,
        "index": trial.trial_index,
        "phase": phase,
        "prompt": prompt,
        "choices": choices,
        "clips": [{"label": label, "url": audio_url(token)} for label, token in zip(labels, trial.tokens)],
    }


def state_payload(
    session: FlowSession,
    trial: OpenTrial | None,
    flow: FlowConfig,
    design: TrialDesign,
    completion: Mapping[str, Any] | None,
    audio_url: AudioUrl,
) -> dict[str, Any]:
    """API.md's ``State``: the stage, the open ``trial`` (None outside trial stages), the
    ``completion`` hand-off (``platforms.identity.completion_payload``), ``progress``
    (trials answered, the open trial's number in its stage, ``expected_left``),
    ``settings`` and, at stage ``volume``, the calibration clip."""
    schedule_state = session.schedule_state
    out: dict[str, Any] = {
        "stage": session.stage,
        "trial": None,
        "completion": None,
        "progress": {
            "trials_answered": answered_count(session),
            "in_stage": int(schedule_state.get("served_in_stage", 0)),
            "expected_left": schedule_state.get("expected_left"),
        },
        "settings": {
            "require_full_playback": flow.require_full_playback,
            "practice_trials": flow.practice_trials,
            "screening_trials": flow.screening.trials_per_test * len(flow.screening.tests),
        },
    }
    if session.stage == "volume":
        out["volume"] = {"clips": [{"label": "calibration", "url": audio_url(schedule_state["volume_token"])}]}
    if trial is not None:
        out["trial"] = trial_payload(trial, audio_url, design)
    out["completion"] = completion
    return out

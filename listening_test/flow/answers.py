"""Answers: which trial, whether it may be answered, whether the answer fits, what it scores.

The refusals are API.md's (``errors.ApiError``): 404 ``trial_not_found``, 403
``bad_nonce``, 409 ``already_answered``, 422 ``invalid_fields``. The body's field
types are checked before (``web.security.require_fields``); these checks are the
ones that need the trial.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ApiError
from .session import OpenTrial

SCREENING_CHOICES = ("1", "2", "3")
MAX_RESPONSE_TIME_MS = 24 * 3600 * 1000  # response_time_ms: 0 .. one day
MAX_PLAY_COUNT = 10_000  # per clip


def open_for(trial: OpenTrial | None, nonce: str) -> OpenTrial:
    """``trial`` if the request may act on it: it is this session's and ``nonce`` is its own
    (compared in constant time).

    Raises:
        ApiError: 404 ``trial_not_found`` (None: not this session's trial); 403 ``bad_nonce``.
    """
    if trial is None:
        raise ApiError(404, "trial_not_found", "no such trial in this session")
    if not hmac.compare_digest(trial.nonce.encode(), nonce.encode("utf-8", "replace")):
        raise ApiError(403, "bad_nonce", "the trial nonce does not match")
    return trial


def choices_for(trial: OpenTrial, design_choices: Sequence[str]) -> tuple[str, ...]:
    """The answers ``trial`` accepts: the interval numbers on a headphone check, else the design's."""
    return SCREENING_CHOICES if trial.kind == "screening" else tuple(design_choices)


def answer_errors(trial: OpenTrial, body: Mapping[str, Any], design_choices: Sequence[str]) -> dict[str, str]:
    """What does not fit ``trial`` in an answer body, by field (empty: it fits).

    ``answer`` must be one of the trial's choices, ``play_counts`` one integer in
    [0, ``MAX_PLAY_COUNT``] per clip, ``response_time_ms`` (ms) in [0, ``MAX_RESPONSE_TIME_MS``].
    """
    errors = {}
    choices = choices_for(trial, design_choices)
    if body["answer"] not in choices:
        errors["answer"] = f"must be one of {list(choices)}"
    counts = body["play_counts"]
    if len(counts) != trial.n_clips or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_PLAY_COUNT for c in counts
    ):
        errors["play_counts"] = f"must be {trial.n_clips} non-negative integers, one per clip"
    if not 0 <= body["response_time_ms"] <= MAX_RESPONSE_TIME_MS:
        errors["response_time_ms"] = "out of range"
    return errors


def check_answer(trial: OpenTrial, body: Mapping[str, Any], design_choices: Sequence[str]) -> None:
    """Raises ApiError 422 ``invalid_fields`` naming each field ``answer_errors`` finds."""
    errors = answer_errors(trial, body, design_choices)
    if errors:
        raise ApiError(422, "invalid_fields", "the answer does not fit this trial", fields=errors)


def is_correct(trial: OpenTrial, answer: str) -> bool | None:
    """Whether ``answer`` is the trial's expected one; None for a trial without one (main pairs, A/B)."""
    return None if trial.expected_answer is None else answer == trial.expected_answer


def feedback(trial: OpenTrial, answer: str) -> dict[str, Any] | None:
    """``{"correct", "expected"}`` for a practice trial; None otherwise (feedback on catch or
    screening trials would teach the shortcut)."""
    if trial.kind != "practice":
        return None
    return {"correct": answer == trial.expected_answer, "expected": trial.expected_answer}


def resubmit(trial: OpenTrial, previous: str | None, answer: str, stage: str) -> dict[str, Any] | None:
    """An answer to a trial answered already: the same answer again is a duplicate (returns
    the feedback it got); another one, or a trial voided without answer, is refused.

    Raises:
        ApiError: 409 ``already_answered`` (with the session's ``stage``).
    """
    if previous is not None and previous == answer:
        return feedback(trial, previous)
    raise ApiError(409, "already_answered", "this trial was answered already, differently", stage=stage)

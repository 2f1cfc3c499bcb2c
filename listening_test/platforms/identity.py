"""Recognise where a participant came from and build their completion hand-off.

MTurk: ``workerId``, ``assignmentId``, ``hitId``, ``turkSubmitTo``; preview mode has
``assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE``. Prolific: ``PROLIFIC_PID``,
``STUDY_ID``, ``SESSION_ID``. Anything else is a plain link.

Worker IDs are case-folded per platform (``normalize_worker_id``), so that the case
variants of one ID (a link retyped, a panel that changes case) are one participant:
MTurk worker IDs are upper-case letters and digits (``A1B2C3...``), so they are
upper-cased; Prolific participant IDs are 24 lower-case hex digits, so they are
lower-cased. Assignment, HIT, study and session IDs are kept as sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import ApiError

MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Only MTurk's own hosts: turkSubmitTo ends up as a form action in the page.
MTURK_SUBMIT_HOSTS = {"www.mturk.com", "workersandbox.mturk.com"}
MTURK_SUBMIT_BY_ENVIRONMENT = {"production": "https://www.mturk.com", "sandbox": "https://workersandbox.mturk.com"}
MTURK_ENVIRONMENTS = tuple(MTURK_SUBMIT_BY_ENVIRONMENT)
PROLIFIC_COMPLETE_URL = "https://app.prolific.com/submissions/complete?cc={code}"
_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Identity:
    platform: str  # mturk | prolific | link
    worker_id: str | None  # None for a fresh plain-link visitor
    session_key: str
    assignment_id: str | None = None
    hit_id: str | None = None
    turk_submit_to: str | None = None
    study_id: str | None = None


def _ids(params: dict[str, Any], names: tuple[str, ...], errors: dict[str, str]) -> tuple[str, ...]:
    """The values of ``names`` in ``params``, in order; each one missing or not a plain id
    is named in ``errors`` and given as "" (the caller refuses the request then)."""
    values = []
    for name in names:
        value = params.get(name)
        if isinstance(value, str) and _ID_RE.match(value):
            values.append(value)
        else:
            errors[name] = "missing or not a plain id (letters, digits, . _ : -; at most 128)"
            values.append("")
    return tuple(values)


def normalize_worker_id(platform: str, worker_id: str) -> str:
    """The stored form of a worker ID: upper case on MTurk, lower case on Prolific,
    as sent elsewhere (ASCII case only; the ids are ASCII by ``_ID_RE``)."""
    if platform == "mturk":
        return worker_id.upper()
    if platform == "prolific":
        return worker_id.lower()
    return worker_id


def is_mturk_preview(params: dict[str, Any]) -> bool:
    return params.get("assignmentId") == MTURK_PREVIEW


def identify(params: dict[str, Any]) -> Identity:
    """Parse landing parameters; raise 422 naming every bad one."""
    errors: dict[str, str] = {}
    if any(k in params for k in ("workerId", "assignmentId", "hitId")):
        worker, assignment, hit = _ids(params, ("workerId", "assignmentId", "hitId"), errors)
        # Absent turkSubmitTo: None here; the landing uses the experiment's recorded
        # environment (store.landing.find_or_create_session), never silently production.
        submit_to = params.get("turkSubmitTo") or None
        host = None
        if submit_to is not None:
            try:
                parts = urlsplit(submit_to) if isinstance(submit_to, str) and len(submit_to) <= 200 else None
                host = parts.hostname if parts is not None and parts.scheme == "https" else None
            except ValueError:  # e.g. an invalid IPv6 literal or port
                host = None
            if host not in MTURK_SUBMIT_HOSTS:
                errors["turkSubmitTo"] = f"must be https on one of {sorted(MTURK_SUBMIT_HOSTS)}"
        if errors:
            raise ApiError(422, "invalid_platform_params", "bad MTurk parameters", fields=errors)
        return Identity(
            "mturk",
            normalize_worker_id("mturk", worker),
            assignment,
            assignment_id=assignment,
            hit_id=hit,
            turk_submit_to=f"https://{host}" if host else None,
        )
    if "PROLIFIC_PID" in params:
        pid, study, sess = _ids(params, ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID"), errors)
        if errors:
            raise ApiError(422, "invalid_platform_params", "bad Prolific parameters", fields=errors)
        return Identity("prolific", normalize_worker_id("prolific", pid), sess, study_id=study)
    return Identity("link", None, "link")


def completion_payload(session, experiment) -> dict[str, Any] | None:
    """What the front end needs to hand the participant back to their platform."""
    if session.completion_code is None:
        return None
    status = "screened_out" if session.stage == "screened_out" else "complete"
    out: dict[str, Any] = {
        "code": session.completion_code,
        "status": status,
        "platform": session.participant.platform,
        "mturk": None,
        "prolific": None,
    }
    if session.participant.platform == "mturk":
        out["mturk"] = {
            "action": f"{session.turk_submit_to}/mturk/externalSubmit",
            "method": "POST",
            "fields": {
                "assignmentId": session.assignment_id,
                "completion_code": session.completion_code,
                "status": status,
            },
        }
    elif session.participant.platform == "prolific":
        code = (
            experiment.prolific_screened_out_code if status == "screened_out" else experiment.prolific_completion_code
        )
        out["prolific"] = {
            "completion_code": code,
            "redirect_url": PROLIFIC_COMPLETE_URL.format(code=quote(code)) if code else None,
        }
    return out

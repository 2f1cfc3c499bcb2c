"""The participant JSON API (``/api/...``). The contract is documented in API.md.

Every handler does its checks before its first write and commits once, so a
rejected request leaves the database as it was (a 4xx raised after a write rolls
the transaction back: the session is removed at the end of the request).

The flow itself is the store's (``listening_test.store``, over the pure core in
``listening_test.flow``): after landing, handlers work on ``store.SessionState`` (a
plain object read with Core) rather than ORM instances: the two hot paths, GET
/api/session and POST /api/session/answer, are 1 and at most 7 statements with no ORM
overhead; on PostgreSQL the answer is 2 round trips (the ``store`` package's docstring).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import IntegrityError

from .. import store
from ..db import commit, db, mark_read_only
from ..models import Experiment
from ..platforms.identity import identify, is_mturk_preview
from .audio import audio_url
from .security import (
    INT64_MAX,
    INT64_MIN,
    ApiError,
    authenticated_public_id,
    checked_client_info,
    csrf_token_for,
    json_body,
    landing_limit,
    rate_limited,
    require_fields,
    session_public_id_from_request,
    set_session_cookie,
    sign_session,
)

bp = Blueprint("api", __name__, url_prefix="/api")

ANSWER_FIELDS = {"trial_id": int, "nonce": str, "answer": str, "response_time_ms": int, "play_counts": list}


def _public_info(experiment: Experiment) -> dict:
    return {
        "slug": experiment.slug,
        "name": experiment.name,
        "test_type": experiment.test_type,
        "accepting": experiment.status in ("active", "draft"),
        "draft": experiment.status == "draft",
    }


def _conflict() -> ApiError:
    db.session.rollback()
    # A concurrent request won the race (e.g. the same answer twice at once).
    return ApiError(409, "conflict", "a concurrent request changed this session; fetch the state again")


def _commit() -> None:
    try:
        db.session.commit()
    except IntegrityError:
        raise _conflict() from None


def _save_and_commit(state: store.SessionState) -> None:
    try:
        store.save_state(state)
        commit()  # on PostgreSQL the deferred writes travel with the COMMIT (one round trip)
    except IntegrityError:
        raise _conflict() from None


@bp.get("/experiments/<slug>")
def experiment_info(slug: str):
    return jsonify(_public_info(store.find_experiment(slug)))


@bp.post("/experiments/<slug>/sessions")
@rate_limited(landing_limit)
def land(slug: str):
    body = json_body()
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise ApiError(
            422,
            "invalid_fields",
            "params must be an object of the page's URL parameters",
            fields={"params": "expected object"},
        )
    client = checked_client_info(body.get("client"))
    experiment = store.find_experiment(slug)
    if is_mturk_preview(params):
        # MTurk preview: the worker has not accepted the HIT; show, create nothing.
        return jsonify({"preview": True, "experiment": _public_info(experiment)})
    who = identify(params)
    client_info = {"user_agent": request.headers.get("User-Agent", "")[:300], **client}
    session, created = store.find_or_create_session(experiment, who, session_public_id_from_request(), client_info)
    _commit()
    state = store.SessionState.from_orm(session)
    payload = {
        "preview": False,
        "created": created,
        "experiment": _public_info(experiment),
        "session_token": sign_session(session.public_id),
        "csrf_token": csrf_token_for(session.public_id),
        "state": store.state_payload(state, audio_url),
    }
    response = jsonify(payload)
    response.status_code = 201 if created else 200
    set_session_cookie(response, session.public_id)
    return response


@bp.get("/session")
def get_state():
    mark_read_only()  # a read: on SQLite, no write lock (the hot path's GET)
    state = store.load_state(authenticated_public_id(csrf=False), with_trial=True)
    return jsonify({"state": store.state_payload(state, audio_url)})


def _step(required: dict | None = None):
    state = store.load_state(authenticated_public_id(csrf=True), for_update=True)
    body = json_body()
    if required:
        require_fields(body, required)
    return state, body


def _advance(step: str, state: store.SessionState):
    try:
        store.advance(state, step)
    except IntegrityError:
        raise _conflict() from None
    _save_and_commit(state)
    return jsonify({"state": store.state_payload(state, audio_url)})


@bp.post("/session/consent")
def consent():
    state, body = _step({"consent": bool})
    if body["consent"] is not True:
        raise ApiError(
            422, "consent_required", "the study can only go on with consent", fields={"consent": "must be true"}
        )
    return _advance("consent", state)


@bp.post("/session/volume")
def volume():
    state, _ = _step()
    return _advance("volume", state)


@bp.post("/session/instructions")
def instructions():
    state, _ = _step()
    return _advance("instructions", state)


@bp.post("/session/answer")
def answer():
    public_id = authenticated_public_id(csrf=True)
    # The body is read before the session so that one statement can fetch both the
    # session and the trial; its errors are still reported after the session's (401).
    try:
        body, body_error = json_body(), None
    except Exception as error:  # noqa: BLE001 - re-raised below, in the original order
        body, body_error = None, error
    trial_id = body.get("trial_id") if body is not None else None
    if type(trial_id) is not int or not INT64_MIN <= trial_id <= INT64_MAX:
        trial_id = None  # require_fields reports it below
    state, trial = store.load_for_answer(public_id, trial_id)
    if body_error is not None:
        raise body_error
    require_fields(body, ANSWER_FIELDS, {"client": dict})
    checked_client_info(body.get("client"))
    try:
        result = store.record_answer(state, trial, body)
    except IntegrityError:
        raise _conflict() from None
    if not result["duplicate"]:
        _save_and_commit(state)
    return jsonify({"recorded": True, **result, "state": store.state_payload(state, audio_url)})


@bp.post("/session/clip-fault")
def clip_fault():
    """The page could not load a clip: the server checks the trial's files and, if one is
    missing or unreadable, voids the trial and serves the next (store.void_trial)."""
    public_id = authenticated_public_id(csrf=True)
    body = json_body()
    require_fields(body, {"trial_id": int, "nonce": str})
    state, trial = store.load_for_answer(public_id, body["trial_id"])
    try:
        result = store.void_trial(state, trial, body["nonce"])
    except IntegrityError:
        raise _conflict() from None
    if not result["duplicate"]:
        _save_and_commit(state)
    return jsonify({**result, "state": store.state_payload(state, audio_url)})

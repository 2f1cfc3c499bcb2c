"""Participant authentication, CSRF, nonces, input validation and JSON errors.

A participant is identified by a signed token naming their session's public id.
It travels as an HttpOnly cookie and, because MTurk shows the task in a
third-party iframe where browsers may drop cookies, also as an
``X-Session-Token`` header that the front end can send instead.

CSRF: every state-changing request must carry ``X-CSRF-Token`` (returned by the
landing call) and a JSON body. A cross-site form can set neither a custom header
nor ``application/json`` without a CORS preflight, which this app never grants.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException

COOKIE_NAME = "jndlab_session"
SESSION_HEADER = "X-Session-Token"
CSRF_HEADER = "X-CSRF-Token"


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def random_token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="jndlab-session")


def sign_session(public_id: str) -> str:
    return _serializer().dumps({"s": public_id})


def session_public_id_from_request() -> str | None:
    """The session named by a valid signed token in the header or the cookie, else None."""
    token = request.headers.get(SESSION_HEADER) or request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    try:
        data = _serializer().loads(token, max_age=current_app.config["SESSION_MAX_AGE_S"])
    except BadSignature:  # includes SignatureExpired
        return None
    value = data.get("s") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def csrf_token_for(public_id: str) -> str:
    # Derived, not stored: an HMAC of the session id under the app secret.
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"csrf:{public_id}".encode(), hashlib.sha256).hexdigest()


def check_csrf(public_id: str) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, csrf_token_for(public_id)):
        raise ApiError(403, "csrf_failed", f"missing or invalid {CSRF_HEADER} header")


def set_session_cookie(response, public_id: str) -> None:
    secure = bool(current_app.config.get("SESSION_COOKIE_SECURE"))
    response.set_cookie(
        COOKIE_NAME,
        sign_session(public_id),
        max_age=current_app.config["SESSION_MAX_AGE_S"],
        httponly=True,
        secure=secure,
        # SameSite=None is what lets the cookie work inside MTurk's iframe (needs Secure).
        samesite="None" if secure else "Lax",
    )


# --- input validation -------------------------------------------------------------

def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx ApiError saying why not."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "malformed_json", "the body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    return data


def _type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; JSON true must not pass as a number.
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        return False
    return isinstance(value, kind)


def require_fields(
    data: Mapping[str, Any],
    required: Mapping[str, type | tuple[type, ...]],
    optional: Mapping[str, type | tuple[type, ...]] | None = None,
) -> None:
    """Check presence and JSON types; raise 422 naming every bad field."""
    errors: dict[str, str] = {}
    for name, kind in required.items():
        if name not in data:
            errors[name] = "missing"
        elif not _type_ok(data[name], kind):
            errors[name] = f"expected {_type_name(kind)}"
    for name, kind in (optional or {}).items():
        if name in data and data[name] is not None and not _type_ok(data[name], kind):
            errors[name] = f"expected {_type_name(kind)}"
    if errors:
        raise ApiError(422, "invalid_fields", "some fields are missing or have the wrong type", fields=errors)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# --- JSON errors ------------------------------------------------------------------

def _error_response(status: int, code: str, message: str, **extra: Any):
    body = {"error": {"status": status, "code": code, "message": message, **extra}}
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        return _error_response(error.status, error.code, error.message, **error.extra)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return _error_response(error.code or 500, code, error.description or error.name)

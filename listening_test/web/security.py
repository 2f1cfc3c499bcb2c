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

import functools
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, current_app, jsonify, request
from flask import Response as FlaskResponse
from flask.sessions import SessionInterface, SessionMixin
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from itsdangerous import BadSignature, URLSafeTimedSerializer
from limits import parse as parse_limit
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from ..errors import ApiError
from ..store import row_id_or

log = logging.getLogger(__name__)
COOKIE_NAME = "jndlab_session"
SESSION_HEADER = "X-Session-Token"
CSRF_HEADER = "X-CSRF-Token"


class NoCookieSession(SessionInterface):
    """No Flask cookie session: jndlab keeps no state in it (a participant carries a signed
    session token, ``sign_session``; the admin a bearer token or password). Flask's default
    would still build a signing serializer and parse its cookie on every request (~0.1 ms,
    about 5 % of an answer's CPU, issue 18). The null session refuses writes loudly."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session: SessionMixin, response: FlaskResponse) -> None:
        return None


def _serializer() -> URLSafeTimedSerializer:
    # Built once per secret (a serializer derives its signer on each use anyway).
    secret = current_app.config["SECRET_KEY"]
    cached = current_app.extensions.get("jndlab_session_serializer")
    if cached is None or cached[0] != secret:
        cached = current_app.extensions["jndlab_session_serializer"] = (
            secret,
            URLSafeTimedSerializer(secret, salt="jndlab-session"),
        )
    return cached[1]


def sign_session(public_id: str) -> str:
    return _serializer().dumps({"s": public_id})


# Tokens whose signature was verified, per serializer (one per secret): their session id
# and signing time. Checking a signature (HMAC, base64, JSON) was ~5 % of an answer's CPU
# (issue 18); a participant sends the same token with every request. Only valid
# signatures are kept (a bad one raises, and lru_cache keeps no exceptions), so garbage
# tokens cannot fill it; the age is checked on every request, as itsdangerous does.
VERIFIED_TOKENS_CACHED = 16384


@functools.lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _verified_token(serializer: URLSafeTimedSerializer, token: str) -> tuple[str | None, int]:
    """(session public id or None, signing time in whole epoch seconds) of a token whose
    signature is valid; raises ``BadSignature`` otherwise (no age check here)."""
    data, signed_at = serializer.loads(token, return_timestamp=True)
    value = data.get("s") if isinstance(data, dict) else None
    return (value if isinstance(value, str) else None), int(signed_at.timestamp())


def session_public_id_from_request() -> str | None:
    """The session named by a valid signed token in the header or the cookie, else None.
    A token older than ``SESSION_MAX_AGE_S`` (or signed in the future) is not valid,
    as with itsdangerous' ``max_age``."""
    token = request.headers.get(SESSION_HEADER) or request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    try:
        public_id, signed_at = _verified_token(_serializer(), token)
    except BadSignature:
        return None
    age = int(time.time()) - signed_at
    if not 0 <= age <= current_app.config["SESSION_MAX_AGE_S"]:
        return None
    return public_id


def csrf_token_for(public_id: str) -> str:
    # Derived, not stored: an HMAC of the session id under the app secret.
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"csrf:{public_id}".encode(), hashlib.sha256).hexdigest()


def check_csrf(public_id: str) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, csrf_token_for(public_id)):
        raise ApiError(403, "csrf_failed", f"missing or invalid {CSRF_HEADER} header")


def authenticated_public_id(*, csrf: bool) -> str:
    """The public id of the request's session (signed token in the header or the cookie);
    with ``csrf``, the request must also carry that session's ``X-CSRF-Token``.

    Raises:
        ApiError: 401 ``no_session`` (no valid token); 403 ``csrf_failed``.
    """
    public_id = session_public_id_from_request()
    if public_id is None:
        raise ApiError(401, "no_session", "no valid session token; start from the landing call")
    if csrf:
        check_csrf(public_id)
    return public_id


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

MAX_JSON_DEPTH = 16  # bodies are flat objects; anything deeper is abuse
MAX_CLIENT_INFO_BYTES = 2048  # the free-form ``client`` field, as compact JSON
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STRING_CHARS = 1024  # any string field of a participant request


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), counted without recursion;
    stops counting once past ``limit``."""
    depth, level = 0, [value]
    while level and depth <= limit:
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        if not nxt:
            break
        depth, level = depth + 1, nxt
    return depth


def _non_finite(value: Any) -> bool:
    # NaN and Infinity are not JSON (Python's parser accepts them; PostgreSQL's JSON does not).
    level = [value]
    while level:
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, float) and not math.isfinite(item):
                return True
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return False


_JSON_KEY = "jndlab.json_body"  # the checked body, kept in the request's WSGI environ (parsed once)


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 4xx ApiError saying why not.

    Raises:
        ApiError: 415 not JSON; 400 ``malformed_json`` (not valid JSON, not an object,
            nested deeper than ``MAX_JSON_DEPTH`` levels, or too deep for the parser).
    """
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    cached: dict[str, Any] | None = request.environ.get(_JSON_KEY)
    if cached is not None:
        return cached
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # deeply nested arrays/objects: the parser gives up
        raise ApiError(
            400, "malformed_json", f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    if data is None:
        raise ApiError(400, "malformed_json", "the body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, "malformed_json", f"the body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    if _non_finite(data):
        raise ApiError(400, "malformed_json", "NaN and Infinity are not JSON numbers")
    request.environ[_JSON_KEY] = data
    return data


def checked_client_info(value: Any, field: str = "client") -> dict[str, Any]:
    """The free-form ``client`` object a page sends, checked: an object of at most
    ``MAX_CLIENT_INFO_BYTES`` bytes as JSON, nested at most 2 levels.

    Raises:
        ApiError: 422 ``invalid_fields`` naming ``field``.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_fields", f"{field} must be an object", fields={field: "expected object"})
    if json_depth(value, 3) > 2:
        raise ApiError(
            422, "invalid_fields", f"{field} is nested too deeply", fields={field: "at most 2 levels of nesting"}
        )
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace"))
    if size > MAX_CLIENT_INFO_BYTES:
        raise ApiError(
            422,
            "invalid_fields",
            f"{field} is too large ({size} bytes)",
            fields={field: f"at most {MAX_CLIENT_INFO_BYTES} bytes as JSON"},
        )
    return value


def _type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; JSON true must not pass as a number.
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        return False
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return False  # no database column holds it: out of range, not a 500
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
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
    names = {
        int: "integer in the signed 64-bit range",
        float: "number",
        str: f"string of at most {MAX_STRING_CHARS} characters",
        bool: "boolean",
        list: "array",
        dict: "object",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# --- JSON errors ------------------------------------------------------------------


def _error_response(status: int, code: str, message: str, **extra: Any):
    body = {"error": {"status": status, "code": code, "message": message, **extra}}
    return jsonify(body), status


# --- transient database faults ------------------------------------------------------

RETRY_AFTER_S = 2
# SQLite (sqlite3.OperationalError messages) and PostgreSQL (SQLSTATE classes/codes):
# faults that go away by themselves, so the client should retry the same request.
_SQLITE_TRANSIENT = {
    "database is locked": ("database_busy", "the database is busy"),
    "database table is locked": ("database_busy", "the database is busy"),
    "database is busy": ("database_busy", "the database is busy"),
    "readonly database": ("database_read_only", "the database is read-only at the moment"),
    "disk i/o error": ("database_unavailable", "the database could not be reached"),
    "unable to open database": ("database_unavailable", "the database could not be reached"),
    "database or disk is full": ("database_unavailable", "the database's disk is full"),
}
_PG_TRANSIENT_CLASSES = {
    "08": "database_unavailable",
    "40": "database_busy",
    "53": "database_unavailable",
    "57": "database_unavailable",
    "55": "database_busy",
    "25": "database_read_only",
}


def transient_database_fault(error: BaseException) -> tuple[str, str] | None:
    """(error code, message) when ``error`` is a database fault worth retrying, else None.

    Retryable: SQLite busy/locked (another process held the write lock longer than the
    busy timeout), a read-only or unreachable file; PostgreSQL connection failures
    (SQLSTATE class 08), serialization failures and deadlocks (40), insufficient
    resources (53), operator intervention / shutdown (57; a statement_timeout, 57014,
    is busy), lock not available (55P03: lock_timeout),
    read-only transactions (25006); a disconnect SQLAlchemy detected; a full pool.
    """
    if isinstance(error, sa_exc.TimeoutError):  # QueuePool exhausted
        return "database_busy", "every database connection is in use"
    if not isinstance(error, sa_exc.DBAPIError):
        return None
    if error.connection_invalidated:
        return "database_unavailable", "the database connection was lost"
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate in ("25006",):
            return "database_read_only", "the database is read-only at the moment"
        if sqlstate in ("55P03", "57014"):  # lock_timeout, statement_timeout (db.py sets both)
            return "database_busy", "the database is busy"
        code = _PG_TRANSIENT_CLASSES.get(sqlstate[:2])
        if code is not None and (sqlstate[:2] != "55" or sqlstate == "55P03") and sqlstate[:2] != "25":
            return code, "the database is busy or unreachable"
        return None
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        text = str(orig).lower()
        for needle, found in _SQLITE_TRANSIENT.items():
            if needle in text:
                return found
        if type(orig).__module__.startswith("psycopg"):  # no SQLSTATE: the connection itself failed
            return "database_unavailable", "the database could not be reached"
    return None


# --- rate limits -------------------------------------------------------------------

# One Limiter for the process; ``init_rate_limits`` binds it to each app (its storage
# comes from RATELIMIT_STORAGE_URI, in-memory by default: per gunicorn worker).
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", headers_enabled=True, strategy="moving-window")
_RATE_LIMITED_VIEWS: set[Any] = set()  # the view functions ``rate_limited`` decorated


def rate_limited(limit_value: Any):
    """``limiter.limit(limit_value)`` on a view, recorded so that requests to every other
    view skip Flask-Limiter's per-request work (``_exempt_unlimited_views``)."""

    def decorate(view):
        limited = limiter.limit(limit_value)(view)
        _RATE_LIMITED_VIEWS.add(limited)
        return limited

    return decorate


@limiter.request_filter
def _exempt_unlimited_views() -> bool:
    """Flask-Limiter's request filter: True (exempt) for a view with no limit of its own.

    jndlab limits landings (``rate_limited``) and admin logins (``admin_login_attempt``,
    straight on the limiter's storage), nothing else; without this filter Flask-Limiter
    still resolved the limits of every request (~0.1 ms of each answer's CPU, issue 18).
    An app given default or application-wide limits (``RATELIMIT_DEFAULT``,
    ``RATELIMIT_APPLICATION``) is not filtered: those apply to every view."""
    config = current_app.config
    if config.get("RATELIMIT_DEFAULT") or config.get("RATELIMIT_APPLICATION"):
        return False
    return current_app.view_functions.get(request.endpoint or "") not in _RATE_LIMITED_VIEWS


# At most this many admin password hashes are computed at once in a process (scrypt
# takes ~50-100 ms of CPU and 16+ MiB each): a burst from many addresses queues here
# instead of starving the participants' requests.
ADMIN_HASHES_AT_ONCE = 2
_hashing = threading.BoundedSemaphore(ADMIN_HASHES_AT_ONCE)


def init_rate_limits(app: Flask) -> None:
    """Landings (``LANDING_RATE_LIMIT``) are limited per client address; admin logins
    by ``admin_login_attempt`` (``ADMIN_FAILED_LOGIN_LIMIT``). Over a limit a client
    gets 429 with Retry-After. The client address is the TCP peer's; behind a reverse
    proxy set ``TRUSTED_PROXY_COUNT`` to the number of proxies in front of the app, so
    that it is taken from X-Forwarded-For (werkzeug ProxyFix, the right-most address
    that many hops back). Left at 0 behind a proxy, every client shares the proxy's
    address (and its limits); set too high, a client can choose its own address by
    sending X-Forwarded-For. Limits live in ``RATELIMIT_STORAGE_URI``: in-memory by
    default, so each gunicorn worker counts its own (point it at Redis/memcached to
    share one count).
    """
    app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    proxies = int(app.config.get("TRUSTED_PROXY_COUNT") or 0)
    if proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Flask documents wrapping wsgi_app so; its type declares a method, not an attribute.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    limiter.init_app(app)
    _gate_limiter_hooks(app)


def _gate_limiter_hooks(app: Flask) -> None:
    """Run Flask-Limiter's before- and after-request hooks only for a request that
    ``_exempt_unlimited_views`` does not exempt.

    For an exempt request they do nothing (no limit applies, so no header is added),
    but Flask-Limiter resolves the endpoint's limits and the per-request context before
    it asks the filter: 0.17 ms of a 4.45 ms answer, 4% (in-process, the answers of
    ``benchmarks/answer_path_cpu.py``; issue 18). The teardown hook (which resets that
    context) runs as before.
    """
    before, after = limiter._check_request_limit, None
    for hook in app.after_request_funcs.get(None, []):
        if getattr(hook, "args", None) == (limiter,):  # partial(Limiter.__inject_headers, limiter)
            after = hook
    if after is None or before not in app.before_request_funcs.get(None, []):
        return  # not the hooks this Flask-Limiter version registers: leave them as they are

    def applies() -> bool:
        # Flask-Limiter checks its meta limits (RATELIMIT_META: how often a client may breach
        # a limit) on every request, the filter notwithstanding: with any, the hooks always run.
        return bool(limiter._meta_limits) or not _exempt_unlimited_views()

    def check_limits() -> None:
        if applies():
            before()

    def add_limit_headers(response):
        return after(response) if applies() else response

    befores, afters = app.before_request_funcs[None], app.after_request_funcs[None]
    befores[befores.index(before)] = check_limits
    afters[afters.index(after)] = add_limit_headers


def _login_limit_key() -> tuple[Any, tuple[str, str]]:
    item = parse_limit(current_app.config.get("ADMIN_FAILED_LOGIN_LIMIT") or "10 per minute")
    return item, ("jndlab-admin-login", get_remote_address() or "unknown")


def admin_login_attempt() -> None:
    """Count one admin login attempt that is not a valid bearer token against this
    client's ``ADMIN_FAILED_LOGIN_LIMIT`` (default 10 per minute), BEFORE any password
    hash is computed: the count is reserved atomically (moving window), so a burst of
    simultaneous attempts cannot get more hashes computed than the limit allows.
    A valid bearer token is compared (constant time, no hash) before this is called,
    so an attack from the admin's own address never locks the token out.

    Raises:
        ApiError: 429 ``too_many_failed_logins`` with ``retry_after_s`` when over the limit.
    """
    item, key = _login_limit_key()
    strategy = limiter.limiter
    if not strategy.hit(item, *key):
        reset = strategy.get_window_stats(item, *key).reset_time
        retry = max(1, int(reset - time.time()) + 1)
        raise ApiError(
            429,
            "too_many_failed_logins",
            f"too many failed admin logins from this address; retry in {retry} s",
            retryable=True,
            retry_after_s=retry,
        )


def admin_login_succeeded() -> None:
    """A password proved right: this client's reserved attempts are forgotten."""
    item, key = _login_limit_key()
    limiter.limiter.clear(item, *key)


def check_admin_password(check, pw_hash: str, password: str) -> bool:
    """``check(pw_hash, password)`` with at most ``ADMIN_HASHES_AT_ONCE`` running in
    this process; 503 ``server_busy`` after 10 s in the queue."""
    if not _hashing.acquire(timeout=10):
        raise ApiError(
            503,
            "server_busy",
            "too many admin logins at once; retry in a few seconds",
            retryable=True,
            retry_after_s=RETRY_AFTER_S,
        )
    try:
        return bool(check(pw_hash, password))
    finally:
        _hashing.release()


def landing_limit() -> str:
    return current_app.config.get("LANDING_RATE_LIMIT") or "30 per minute"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        response, status = _error_response(error.status, error.code, error.message, **error.extra)
        if status in (429, 503):
            response.headers["Retry-After"] = str(error.extra.get("retry_after_s", RETRY_AFTER_S))
        return response, status

    @app.errorhandler(sa_exc.SQLAlchemyError)
    def _database_error(error: sa_exc.SQLAlchemyError):
        from ..db import db

        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001, S110 - the connection may be gone; the session is removed anyway
            pass
        fault = transient_database_fault(error)
        if fault is not None:
            code, message = fault
            log.warning(
                "transient database fault on %s %s: %s",
                request.method,
                request.path,
                str(getattr(error, "orig", error)).splitlines()[0][:300],
            )
            response, status = _error_response(
                503,
                code,
                f"{message}; nothing was saved, please retry in a few seconds",
                retryable=True,
                retry_after_s=RETRY_AFTER_S,
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response, status
        if isinstance(error, sa_exc.DataError):
            # A value the column cannot hold (too long, out of range) that validation missed.
            log.warning(
                "value rejected by the database on %s %s: %s",
                request.method,
                request.path,
                str(getattr(error, "orig", error)).splitlines()[0][:300],
            )
            return _error_response(422, "invalid_value", "a value is out of range or too long for its field")
        raise error

    @app.errorhandler(RecursionError)
    def _too_deep(_error: RecursionError):
        return _error_response(400, "malformed_json", "the body is nested too deeply")

    init_rate_limits(app)

    @app.url_value_preprocessor
    def _ids_in_range(_endpoint, values):
        # <int:..._id> URL parts beyond the id columns' range: looked up as unknown ids (404)
        for key, value in (values or {}).items():
            if key.endswith("id") and type(value) is int:
                values[key] = row_id_or(value, 0)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return _error_response(error.code or 500, code, error.description or error.name)

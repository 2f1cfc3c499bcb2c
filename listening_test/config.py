"""Configuration from the environment.

The app factory calls ``load_config()``; tests pass a dict that overrides it.
Outside testing the app refuses to *serve* without a SECRET_KEY: a default secret
would let anyone forge participant sessions. Commands that serve nothing (``--help``,
``db upgrade``, ``experiment create``, exports) need no secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
# migrations/ lives at the repository root (Flask-Migrate's layout).
DEFAULT_MIGRATIONS_DIR = PACKAGE_ROOT.parent / "migrations"
DEFAULT_MAX_CONTENT_LENGTH = 64 * 1024  # answers are tiny; anything bigger is abuse
DEFAULT_DATABASE_POOL_SIZE = 16  # twice serve's default 8 threads per worker
# The most SESSION_MAX_AGE_S and AUDIO_MAX_AGE_S may be: the participant cookie and the
# clips carry an Expires date of now + max age, and past the year 9999 building it raised
# in every landing and every clip (500). Ten years is far beyond any study.
MAX_AGE_CEILING_S = 10 * 365 * 24 * 3600


class ConfigError(RuntimeError):
    """The configuration cannot run the app; the message says what to set."""


def default_database_url(cwd: str | os.PathLike | None = None) -> str:
    """The embedded default: a SQLite file ``instance/jndlab.sqlite`` under ``cwd``.

    WAL mode is switched on per connection by ``listening_test.db``.
    """
    folder = Path(cwd or os.getcwd()).resolve() / "instance"
    return f"sqlite:///{folder / 'jndlab.sqlite'}"


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """An integer setting; ConfigError naming the variable when it is not one, or is below
    ``minimum`` or above ``maximum``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below its minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above its maximum {maximum}")
    return value


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read the app's settings from ``environ`` (``os.environ`` by default).

    Raises:
        ConfigError: an integer setting (``MAX_CONTENT_LENGTH``, ``AUDIO_MAX_AGE_S``,
            ``SESSION_MAX_AGE_S``, ``TRUSTED_PROXY_COUNT``, ``DATABASE_POOL_SIZE``) is not an
            integer or is below its minimum (the two max ages: or above ``MAX_AGE_CEILING_S``, ten years).
    """
    env = os.environ if environ is None else environ
    return {
        "SQLALCHEMY_DATABASE_URI": env.get("DATABASE_URL") or default_database_url(),
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "ADMIN_TOKEN": env.get("ADMIN_TOKEN") or None,
        "ADMIN_PASSWORD_HASH": env.get("ADMIN_PASSWORD_HASH") or None,
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH, 1),
        # Behind HTTPS (always, for MTurk/Prolific) the session cookie must be Secure
        # and SameSite=None to survive MTurk's iframe; plain HTTP for local demos.
        "SESSION_COOKIE_SECURE": _bool(env.get("SESSION_COOKIE_SECURE"), False),
        "MIGRATIONS_DIR": env.get("MIGRATIONS_DIR") or str(DEFAULT_MIGRATIONS_DIR),
        "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL") or None,
        "AUDIO_MAX_AGE_S": _int(env, "AUDIO_MAX_AGE_S", 3600, 0, MAX_AGE_CEILING_S),
        "SESSION_MAX_AGE_S": _int(env, "SESSION_MAX_AGE_S", 7 * 24 * 3600, 60, MAX_AGE_CEILING_S),
        # Per client address (Flask-Limiter syntax); see security.init_rate_limits.
        "LANDING_RATE_LIMIT": env.get("LANDING_RATE_LIMIT") or "30 per minute",
        "ADMIN_FAILED_LOGIN_LIMIT": env.get("ADMIN_FAILED_LOGIN_LIMIT") or "10 per minute",
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI") or "memory://",
        "TRUSTED_PROXY_COUNT": _int(env, "TRUSTED_PROXY_COUNT", 0, 0),
        # Database connections kept open per process: at least gunicorn's threads per worker
        # (``serve`` runs 8); see db.pool_options.
        "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE, 1),
    }


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse to serve with settings that would be unsafe in production.

    Raises:
        ConfigError: ``SECRET_KEY`` is unset or shorter than 16 characters (outside ``TESTING``).
    """
    if config.get("TESTING"):
        return
    if not config.get("SECRET_KEY"):
        raise ConfigError(
            "SECRET_KEY is not set: export SECRET_KEY=<long random string> "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(str(config["SECRET_KEY"])) < 16:
        raise ConfigError("SECRET_KEY is too short: use at least 16 random characters")

"""The app factory: ``create_app(config=None)`` (``listening_test.create_app``).

It reads its settings from the environment (``listening_test.config``); ``config``
overrides them (tests pass ``TESTING``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from .config import ConfigError, check_config, load_config


class InOrderJSONProvider(DefaultJSONProvider):
    """Flask's JSON, with objects' keys in the order the code built them (not sorted)."""

    sort_keys = False


def create_app(config: dict[str, Any] | None = None, *, serving: bool | None = None) -> Flask:
    """Build the app from the environment, with ``config`` overriding it.

    ``serving`` says whether the app will answer HTTP requests, which needs a SECRET_KEY.
    By default it is True unless the app is built inside a command-line command (``flask
    --app listening_test ...`` or ``python -m listening_test ...``): gunicorn's
    ``listening_test:create_app()`` refuses to start without a secret, while ``--help``,
    ``db upgrade``, ``experiment create`` and exports run without one. The commands that
    serve (``serve``, ``demo``) check the secret themselves, and an app built without one
    answers every request with 503 instead of signing sessions with nothing.

    Raises:
        ConfigError: ``serving`` and no usable ``SECRET_KEY`` (see ``config.check_config``).
    """
    app = Flask("listening_test", instance_relative_config=False)  # the package: its templates/ and static/
    app.config.update(load_config())
    app.config.update(config or {})
    if serving is None:
        serving = click.get_current_context(silent=True) is None
    if serving:
        check_config(app.config)
    else:
        _refuse_requests_without_secret(app)
    if app.config.get("TESTING") and not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = "testing-only-secret-key"  # noqa: S105 - TESTING only
    app.json = InOrderJSONProvider(app)
    _ensure_sqlite_folder(app.config["SQLALCHEMY_DATABASE_URI"])

    from . import cli
    from .db import init_db
    from .web import admin, api, audio, pages
    from .web.security import NoCookieSession, register_error_handlers

    app.session_interface = NoCookieSession()
    init_db(app)
    register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(audio.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(pages.bp)
    cli.register(app)
    return app


def _refuse_requests_without_secret(app: Flask) -> None:
    # An app built by a command (e.g. `flask --app listening_test run`) may still be asked to
    # serve: without a secret it must not sign sessions, so every request gets a clear 503.
    @app.before_request
    def _require_secret():
        try:
            check_config(app.config)
        except ConfigError as error:
            return {"error": "server_misconfigured", "message": str(error)}, 503
        return None


def _ensure_sqlite_folder(url: str) -> None:
    # SQLite creates the file but not its folder (instance/ on a fresh checkout).
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)

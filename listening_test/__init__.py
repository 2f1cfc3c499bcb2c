"""jndlab listening test: the Flask app for adaptive same/different studies.

``create_app(config=None)`` reads its settings from the environment
(``listening_test.config``); ``config`` overrides them (tests pass ``TESTING``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from .config import check_config, default_database_url, load_config

__all__ = ["create_app", "default_database_url"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=False)
    app.config.update(load_config())
    app.config.update(config or {})
    check_config(app.config)
    if app.config.get("TESTING") and not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = "testing-only-secret-key"
    app.json.sort_keys = False
    _ensure_sqlite_folder(app.config["SQLALCHEMY_DATABASE_URI"])

    from . import admin, api, audio_tokens, cli, pages
    from .db import init_db
    from .security import register_error_handlers

    init_db(app)
    register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(audio_tokens.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(pages.bp)
    cli.register(app)
    return app


def _ensure_sqlite_folder(url: str) -> None:
    # SQLite creates the file but not its folder (instance/ on a fresh checkout).
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

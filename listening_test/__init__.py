"""jndlab listening test: the web app for adaptive same/different and A/B studies.

``create_app(config=None)`` (``listening_test.factory``) builds the Flask app; it reads
its settings from the environment (``listening_test.config``) and ``config`` overrides
them (tests pass ``TESTING``). ``flask --app listening_test`` and gunicorn's
``listening_test:create_app()`` find it here.

The package's layers, each importing only those below it:

- pure, no Flask or database: ``procedures`` (adaptive procedures), ``headphone``,
  ``flow_config``, ``estimates``, ``screening`` (worker exclusion), ``errors``, ``clips``,
  and ``flow`` (the session flow's core: stage machine, answer checks, next trial);
- the database: ``db``, ``models``, ``manifest_import``, ``export``; ``store`` (all the
  session flow's SQL, calling ``flow``), ``stats``, ``platforms`` (recruitment, MTurk,
  Prolific);
- on top: ``web`` (blueprints), ``cli`` (commands), ``simulation`` (a client over HTTP).

Importing ``listening_test`` (or a pure module of it) does not import Flask: the factory
is loaded when ``create_app`` is first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import default_database_url

if TYPE_CHECKING:
    from .factory import create_app

__all__ = ["create_app", "default_database_url"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

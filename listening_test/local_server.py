"""Serve an app from a background thread on a free 127.0.0.1 port (werkzeug, threaded).

For dry runs of a study with simulated listeners (``python -m se ab-test --simulate``)
and for tests: not a production server (use ``python -m listening_test serve``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from flask import Flask

# Every client of a local server is this machine: a simulated crowd all lands from
# 127.0.0.1, so the per-address landing limit (30 per minute by default) would count the
# whole crowd as one client and turn a dry run of 40 participants into a wait.
CROWD_LANDING_RATE_LIMIT = "100000 per minute"


@contextlib.contextmanager
def local_server(app: Flask, landing_rate_limit: str | None = CROWD_LANDING_RATE_LIMIT) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``); stop the server and close the pool at exit.

    ``landing_rate_limit``: the app's ``LANDING_RATE_LIMIT`` while it is served here
    (a ``limits`` string, e.g. ``"30 per minute"``); None keeps the app's own.
    """
    from werkzeug.serving import make_server

    from .db import db

    if landing_rate_limit is not None:
        app.config["LANDING_RATE_LIMIT"] = landing_rate_limit

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        with app.app_context():
            db.engine.dispose()

"""Serve an app from a background thread on a free 127.0.0.1 port (werkzeug, threaded).

For dry runs of a study with simulated listeners (``python -m se ab-test --simulate``)
and for tests: not a production server (use ``python -m listening_test serve``).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from flask import Flask


@contextlib.contextmanager
def local_server(app: Flask) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``); stop the server and close the pool at exit."""
    from werkzeug.serving import make_server

    from .db import db

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

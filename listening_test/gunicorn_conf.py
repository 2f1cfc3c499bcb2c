"""gunicorn settings that ``serve`` (and ``benchmarks/listening_load.py``, for the app and
its floor alike) pass with ``--config python:listening_test.gunicorn_conf``.

``post_worker_init`` moves everything a worker holds once the app is loaded (Flask,
SQLAlchemy, numpy, the app's own modules: about 10^5 objects) into the collector's
permanent generation with ``gc.freeze()``, as the Python documentation describes for
long-lived servers (https://docs.python.org/3/library/gc.html#gc.freeze). A full
(generation 2) collection otherwise walks all of them and stops every thread of the
worker meanwhile: measured under ``listening_load.py`` (200 participants, SQLite, 2x8),
one full collection per worker took 73-79 ms without the freeze and 8-9 ms with it,
stalling every request in flight (issue 18). Nothing that becomes garbage later is
affected: objects created after the freeze are collected as before.
"""

from __future__ import annotations

import gc
from typing import Any


def post_worker_init(worker: Any) -> None:
    """Called by gunicorn in each worker once it has loaded the app."""
    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()

"""``serve``'s gunicorn settings (listening_test.gunicorn_conf): each worker freezes what it
holds once the app is loaded, so full collections no longer walk the app's ~10^5 objects
(issue 18). tests/listening_test/test_kill_restart.py runs gunicorn with them."""

from __future__ import annotations

import gc

from listening_test.cli.serve import GUNICORN_CONFIG
from listening_test.gunicorn_conf import post_worker_init


def test_a_worker_freezes_what_it_holds_after_loading_the_app():
    before = gc.get_freeze_count()
    try:
        post_worker_init(worker=None)
        assert gc.get_freeze_count() > before
        cycle: list = []
        cycle.append(cycle)  # garbage made after the freeze is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()


def test_serve_command_names_the_settings(runner):
    result = runner.invoke(args=["serve", "--print-command"])
    assert result.exit_code == 0, result.output
    assert f"--config {GUNICORN_CONFIG}" in result.output

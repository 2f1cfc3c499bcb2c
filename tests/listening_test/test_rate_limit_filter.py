"""Flask-Limiter's per-request work only where a limit applies (issue 18): landings stay
limited, the participant's other requests never consult the limiter, and an app given
default limits still has them on every view."""

from __future__ import annotations

import pytest

from listening_test.web import security
from tests.listening_test.lt_helpers import Participant, template_copy_app


@pytest.fixture
def limiter_calls(monkeypatch):
    """Endpoints whose limits Flask-Limiter resolved (its per-request work), in order."""
    calls: list[str] = []
    manager = security.limiter.limit_manager
    original = manager.resolve_limits

    def counted(app, endpoint, *args, **kwargs):
        calls.append(endpoint)
        return original(app, endpoint, *args, **kwargs)

    monkeypatch.setattr(manager, "resolve_limits", counted)
    return calls


def test_only_the_landing_consults_the_limiter(app, client, limiter_calls):
    p = Participant(app, client)
    p.land()
    assert "api.land" in limiter_calls, "the landing must be counted against LANDING_RATE_LIMIT"
    limiter_calls.clear()
    p.to_stage("main")
    p.answer()
    assert client.get("/api/session").status_code == 200
    assert client.get("/api/experiments/demo").status_code == 200
    assert limiter_calls == []


def test_landings_are_still_limited(app):
    app.config["LANDING_RATE_LIMIT"] = "2 per minute"
    codes = [
        app.test_client().post("/api/experiments/demo/sessions", json={"params": {}}).status_code for _ in range(3)
    ]
    assert codes == [201, 201, 429]


def test_default_limits_apply_to_every_view(tmp_path, template_db, manifest_path):
    from tests.listening_test.lt_helpers import add_demo_experiment

    app = template_copy_app(template_db, tmp_path / "limited.sqlite", RATELIMIT_DEFAULT="2 per minute")
    from listening_test.db import db

    with app.app_context():
        add_demo_experiment(manifest_path)
    client = app.test_client()
    codes = [client.get("/api/experiments/demo").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    with app.app_context():
        db.engine.dispose()

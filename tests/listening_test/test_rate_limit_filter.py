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


def test_unlimited_views_skip_the_limiters_hooks(app, client, monkeypatch):
    """Flask-Limiter's before- and after-request hooks (``_gate_limiter_hooks``) run for a
    landing, which gets its X-RateLimit headers, and not at all for the hot path."""
    seen: list[str] = []
    limiter = security.limiter
    identify, deduct = limiter.identify_request, limiter._Limiter__check_conditional_deductions
    monkeypatch.setattr(limiter, "identify_request", lambda: seen.append("before") or identify())
    monkeypatch.setattr(
        limiter, "_Limiter__check_conditional_deductions", lambda response: seen.append("after") or deduct(response)
    )
    p = Participant(app, client)
    landing = p.land()
    assert "before" in seen and "after" in seen
    assert landing.headers.get("X-RateLimit-Limit") is not None
    seen.clear()
    p.to_stage("main")
    reply = p.post("/api/session/answer", p.answer_body())
    assert reply.status_code == 200
    assert client.get("/api/session").status_code == 200
    assert seen == []
    assert "X-RateLimit-Limit" not in reply.headers


def test_hooks_are_gated_once_per_app(tmp_path, template_db):
    """A second ``init_rate_limits`` on the same app leaves one gated pair of hooks."""
    app = template_copy_app(template_db, tmp_path / "twice.sqlite")
    before = list(app.before_request_funcs[None])
    after = list(app.after_request_funcs[None])
    security.init_rate_limits(app)
    assert app.before_request_funcs[None] == before
    assert app.after_request_funcs[None] == after
    assert [f.__name__ for f in before] == ["check_limits"]


def test_meta_limits_still_block_every_view(tmp_path, template_db, manifest_path, monkeypatch):
    """Flask-Limiter checks meta limits (RATELIMIT_META) on every request, exempt or not: a
    client over its landing limit too often is refused everywhere, as without the gate."""
    from listening_test.db import db
    from tests.listening_test.lt_helpers import add_demo_experiment

    monkeypatch.setattr(security.limiter, "_meta_limits", [])  # init_app sets it once per process
    app = template_copy_app(
        template_db, tmp_path / "meta.sqlite", LANDING_RATE_LIMIT="1 per minute", RATELIMIT_META="1 per hour"
    )
    with app.app_context():
        add_demo_experiment(manifest_path)
    client = app.test_client()
    codes = [client.post("/api/experiments/demo/sessions", json={"params": {}}).status_code for _ in range(2)]
    assert codes == [201, 429]
    reply = client.get("/api/experiments/demo")
    assert reply.status_code == 429
    assert reply.headers.get("Retry-After") is not None
    assert reply.headers.get("X-RateLimit-Limit") == "1"
    with app.app_context():
        db.engine.dispose()

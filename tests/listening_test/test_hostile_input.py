"""Issue 14, fault 5: every malformed, oversized or out-of-range value in any field of any
participant endpoint gets a 4xx with a JSON error, never a 500, on SQLite and PostgreSQL.

Hypothesis draws bodies field by field: each endpoint's real fields with values of every
JSON type (huge and negative integers, non-finite floats, long and non-ASCII strings,
deep nesting), plus unknown fields and raw non-JSON bytes. After every request the
participant's session must still answer its state (nothing half-written).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.listening_test.lt_helpers import Participant
from tests.listening_test.test_integrity import make  # noqa: F401 - the parametrized app fixture

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300)
    | st.sampled_from(["same", "different", "A", "B", "1", "", "\u0000", "\u00e9" * 40, "x" * 3000])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


ANSWER_KEYS = ("trial_id", "nonce", "answer", "response_time_ms", "play_counts", "client")
LAND_PARAM_KEYS = ("workerId", "assignmentId", "hitId", "turkSubmitTo", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "utm")


@st.composite
def answer_bodies(draw, valid: dict):
    body = dict(valid)
    for key in draw(st.lists(st.sampled_from(ANSWER_KEYS + ("extra",)), max_size=3, unique=True)):
        if draw(st.booleans()):
            body[key] = draw(JSON)
        else:
            body.pop(key, None)
    return body


@st.composite
def landing_bodies(draw):
    params = {}
    for key in draw(st.lists(st.sampled_from(LAND_PARAM_KEYS), max_size=5, unique=True)):
        params[key] = draw(st.text(max_size=200) | JSON)
    body = {"params": params if draw(st.integers(0, 9)) else draw(JSON)}
    if draw(st.booleans()):
        body["client"] = draw(JSON)
    return body


RAW = st.sampled_from(
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b"null",
        b"1e999999",
        b'{"a": NaN}',
        deep(1000).encode(),
        ('{"x": ' + deep(5000) + "}").encode(),
        b'{"params": ' + b"{" * 800,
    ]
)


def _ok(r, what):
    assert r.status_code < 500, (what, r.status_code, r.data[:300])
    if r.status_code >= 400:
        error = json.loads(r.data)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


def test_participant_endpoints_never_answer_500(make):  # noqa: F811 - the fixture
    app = make(max_sessions_per_worker=None)
    app.config["LANDING_RATE_LIMIT"] = "100000 per minute"
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    headers = {"X-CSRF-Token": p.csrf, "X-Session-Token": p.token}

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        body=answer_bodies(p.answer_body()),
        land=landing_bodies(),
        raw=RAW,
        path=st.sampled_from(
            [
                "/api/session/answer",
                "/api/session/clip-fault",
                "/api/session/consent",
                "/api/session/volume",
                "/api/session/instructions",
                "/api/experiments/demo/sessions",
            ]
        ),
    )
    def check(body, land, raw, path):
        client = app.test_client()
        _ok(client.post("/api/session/answer", json=body, headers=headers), body)
        _ok(client.post("/api/session/clip-fault", json=body, headers=headers), body)
        _ok(client.post("/api/experiments/demo/sessions", json=land), land)
        _ok(client.post(path, data=raw, content_type="application/json", headers=headers), raw[:80])
        state = client.get("/api/session", headers=headers)
        assert state.status_code == 200, state.data[:300]

    check()


def test_flask_json_non_finite_numbers_are_refused(make):  # noqa: F811
    app = make()
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    body = p.answer_body()
    raw = json.dumps({**body, "client": {"x": 1}}).replace('{"x": 1}', '{"x": NaN}')
    r = p.client.post(
        "/api/session/answer", data=raw, content_type="application/json", headers={"X-CSRF-Token": p.csrf}
    )
    assert r.status_code == 400 and json.loads(r.data)["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("depth", [17, 100, 999, 5000])
def test_any_depth_is_a_4xx(app, client, depth):
    r = client.post(
        "/api/experiments/demo/sessions",
        data='{"params": {}, "client": ' + deep(depth) + "}",
        content_type="application/json",
    )
    assert r.status_code == 400


def test_admin_endpoints_never_answer_500(make, manifest_path):  # noqa: F811
    from tests.listening_test.lt_helpers import ADMIN_TOKEN

    app = make()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    fields = (
        "manifest",
        "procedure",
        "name",
        "procedure_config",
        "config",
        "test_type",
        "reward_cents",
        "target_judgments",
        "prolific_completion_code",
        "status",
    )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        values=st.dictionaries(st.sampled_from(fields), JSON, max_size=5),
        raw=RAW,
        path=st.sampled_from(["/admin/api/experiments", "/admin/api/experiments/demo/status"]),
    )
    def check(values, raw, path):
        client = app.test_client()
        body = {"manifest": str(manifest_path), "procedure": "staircase", **values}
        _ok(client.post(path, json=body, headers=auth), body)
        _ok(client.post(path, data=raw, content_type="application/json", headers=auth), raw[:80])

    check()

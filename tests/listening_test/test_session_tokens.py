"""Signed session tokens: verified signatures are remembered (issue 18: checking one was
~5 % of an answer's CPU), but a token's age, its signature and the app's secret are
still checked on every request, cached or not."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from listening_test.web import security
from tests.listening_test.lt_helpers import Participant

MAX_AGE_S = 600


@pytest.fixture
def landed(app):
    app.config["SESSION_MAX_AGE_S"] = MAX_AGE_S
    client = app.test_client()
    p = Participant(app, client)
    p.land()
    client.delete_cookie("jndlab_session")  # the header alone names the session below
    return app, client, p


def _public_id(app, token: str) -> str:
    return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="jndlab-session").loads(token)["s"]


def _signed_at(app, public_id: str, offset_s: int) -> str:
    """A token for ``public_id`` as the app signs it, but ``offset_s`` from now."""

    class Shifted(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) + offset_s

    serializer = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="jndlab-session", signer=Shifted)
    return serializer.dumps({"s": public_id})


def _other_char(c: str) -> str:
    return "A" if c != "A" else "B"


def _status(client, token: str) -> int:
    return client.get("/api/session", headers={"X-Session-Token": token}).status_code


def test_a_cached_token_expires_on_time(landed, monkeypatch):
    app, client, p = landed
    assert _status(client, p.token) == 200  # verified once: now remembered
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + MAX_AGE_S + 5)
    assert _status(client, p.token) == 401
    monkeypatch.setattr(time, "time", real)
    assert _status(client, p.token) == 200


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [(-(MAX_AGE_S - 30), 200), (-(MAX_AGE_S + 30), 401), (3600, 401)],
    ids=["young", "expired", "signed-in-the-future"],
)
def test_token_age_is_checked_first_time_and_cached(landed, offset_s, expected):
    app, client, p = landed
    token = _signed_at(app, _public_id(app, p.token), offset_s)
    assert _status(client, token) == expected
    assert _status(client, token) == expected  # the second time from the cache


def test_tampered_and_foreign_tokens_are_refused_even_after_the_real_one_was_cached(landed):
    app, client, p = landed
    assert _status(client, p.token) == 200
    body, signature = p.token.rsplit(".", 1)
    # Change the first character of each part: all its 6 bits are data. The last
    # character of unpadded base64 also holds padding bits, so changing only those (e.g.
    # 'A' -> 'B' at the end of a 20-byte HMAC) decodes to the very same signature, which
    # made an earlier form of this test fail one run in 16.
    for tampered in (
        f"{body}.{_other_char(signature[0])}{signature[1:]}",
        f"{_other_char(body[0])}{body[1:]}.{signature}",
    ):
        assert _status(client, tampered) == 401, tampered
    foreign = URLSafeTimedSerializer("another secret", salt="jndlab-session").dumps({"s": _public_id(app, p.token)})
    assert _status(client, foreign) == 401
    assert _status(client, "garbage") == 401


def test_a_new_secret_invalidates_cached_tokens(landed):
    app, client, p = landed
    assert _status(client, p.token) == 200
    app.config["SECRET_KEY"] = "a rotated secret of enough length 0123456789"
    assert _status(client, p.token) == 401


def test_bad_tokens_are_not_remembered(landed):
    _, client, _ = landed
    before = security._verified_token.cache_info().currsize
    for i in range(50):
        assert _status(client, f"not-a-token-{i}") == 401
    assert security._verified_token.cache_info().currsize == before

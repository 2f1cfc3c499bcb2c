"""Clip URLs built from a cached prefix (``web.audio.audio_url``, issue 18) are exactly
``url_for``'s, under any script root, and no client can grow the cache."""

from __future__ import annotations

import pytest
from flask import url_for

from listening_test.web import audio
from tests.listening_test.lt_helpers import participant_at


def _clip_urls(body):
    trial = (body.get("state") or body).get("trial") or {}
    return [c["url"] for c in trial.get("clips", [])]


def test_clip_urls_under_a_script_name_match_url_for(app):
    p = participant_at(app, "main")
    for root in ("", "/study", "/other/deeper"):
        r = p.client.get("/api/session", environ_overrides={"SCRIPT_NAME": root})
        assert r.status_code == 200, r.get_json()
        urls = _clip_urls(r.get_json())
        assert urls
        with app.test_request_context("/api/session", environ_overrides={"SCRIPT_NAME": root}):
            expected = [url_for("audio.clip", token=u.rsplit("/", 1)[1]) for u in urls]
        assert urls == expected


def test_clip_url_prefix_cache_is_bounded_per_app(app):
    """The prefix cache is keyed by request.script_root, which comes from the WSGI environ:
    behind gunicorn, a trusted forwarder (forwarded_allow_ips, 127.0.0.1 by default) that
    passes a client's SCRIPT_NAME header through lets one participant add an entry per
    request. It stays bounded, and URLs past the bound are still right."""
    p = participant_at(app, "main")
    for i in range(300):
        r = p.client.get("/api/session", environ_overrides={"SCRIPT_NAME": f"/x{i}"})
        assert r.status_code == 200
    prefixes = app.extensions.get("jndlab_audio_url_prefix", {})
    assert len(prefixes) <= audio.AUDIO_URL_PREFIXES_KEPT, f"{len(prefixes)} cached prefixes after 300 script roots"
    r = p.client.get("/api/session", environ_overrides={"SCRIPT_NAME": "/late"})
    assert all(url.startswith("/late/audio/") for url in _clip_urls(r.get_json()))


@pytest.mark.parametrize("token", ["abc.def", "a b", "ä", "a/b", ""])
def test_non_url_safe_tokens_go_through_url_for(app, token):
    with app.test_request_context("/"):
        assert audio.audio_url(token) == url_for("audio.clip", token=token)

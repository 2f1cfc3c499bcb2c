"""Audio under opaque session-bound tokens: Range, caching, traversal, other sessions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tests.listening_test.lt_helpers import Participant, db_snapshot


def fetch(client, url, **kwargs):
    """GET and close: file responses hold an open file until closed."""
    response = client.get(url, **kwargs)
    response.get_data()
    response.close()
    return response


def test_clip_served_with_range_and_cache_headers(in_main):
    url = in_main.state["trial"]["clips"][0]["url"]
    assert "ref_" not in url and "noise" not in url and ".wav" not in url
    full = fetch(in_main.client, url)
    assert full.status_code == 200 and full.mimetype == "audio/wav"
    assert "private" in full.headers["Cache-Control"] and "max-age" in full.headers["Cache-Control"]
    assert full.headers.get("Accept-Ranges") == "bytes"
    audio, rate = sf.read(io.BytesIO(full.data))
    assert rate == 16000 and len(audio) == 1600
    part = fetch(in_main.client, url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.data == full.data[:100]
    assert part.headers["Content-Range"] == f"bytes 0-99/{len(full.data)}"


def test_ab_order_varies_and_pair_differs(in_main, app):
    # Across many answered trials, clip A is sometimes the reference and sometimes not.
    from sqlalchemy import select

    from listening_test.db import db
    from listening_test.models import Trial

    in_main.to_stage("complete")
    with app.app_context():
        orders = set(db.session.scalars(select(Trial.a_is_reference).where(Trial.kind != "screening")))
    assert orders == {True, False}


def test_screening_clips_are_stereo_generated(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("screening")
    r = fetch(client, p.state["trial"]["clips"][0]["url"])
    assert r.status_code == 200
    audio, rate = sf.read(io.BytesIO(r.data))
    assert rate == 44100 and audio.shape[1] == 2
    part = fetch(client, p.state["trial"]["clips"][0]["url"], headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == r.data[10:20]


@pytest.mark.parametrize(
    "path",
    [
        "/audio/../../etc/passwd",
        "/audio/..%2F..%2Fetc%2Fpasswd",
        "/audio/%2e%2e/%2e%2e/etc/passwd",
        "/audio/ref_a.wav",
        "/audio/audio/ref_a.wav",
        "/audio/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_path_traversal_and_unknown_tokens_are_404(app, in_main, path):
    before = db_snapshot(app)
    r = fetch(in_main.client, path)
    assert r.status_code == 404
    assert b"root:" not in r.data and b"RIFF" not in r.data
    assert db_snapshot(app) == before


def test_token_is_bound_to_its_session(app, in_main):
    url = in_main.state["trial"]["clips"][0]["url"]
    stranger = app.test_client()
    assert fetch(stranger, url).status_code == 404
    other = Participant(app, stranger, {"workerId": "W9", "assignmentId": "A9", "hitId": "H1"})
    other.land()
    assert fetch(stranger, url).status_code == 404
    # The header token works without a cookie (MTurk iframe without third-party cookies).
    bare = app.test_client()
    assert fetch(bare, url, headers={"X-Session-Token": in_main.token}).status_code == 200


def test_headphone_module_unit():
    from listening_test import headphone

    rng = np.random.default_rng(1)
    spec = headphone.make_trial("antiphase", rng)
    clips = [headphone.render_interval(spec, i) for i in range(3)]
    rms = [float(np.sqrt(np.mean(c**2))) for c in clips]
    quiet = spec["target"] - 1
    assert rms[quiet] == pytest.approx(min(rms)) and rms[quiet] < 0.6 * max(rms)
    anti = clips[spec["antiphase"] - 1]
    assert np.allclose(anti[:, 0], -anti[:, 1])
    # Summed to mono (loudspeakers), the antiphase interval cancels and becomes the quietest.
    mono = [float(np.abs(c.sum(axis=1)).max()) for c in clips]
    assert int(np.argmin(mono)) == spec["antiphase"] - 1

    spec = headphone.make_trial("huggins", rng)
    clips = [headphone.render_interval(spec, i) for i in range(3)]
    for i, c in enumerate(clips):
        diotic = np.allclose(c[:, 0], c[:, 1], atol=1e-6)
        assert diotic == (i != spec["target"] - 1)
    target = clips[spec["target"] - 1]
    spectrum = np.abs(np.fft.rfft(target[:, 0] - target[:, 1]))
    freqs = np.fft.rfftfreq(len(target), 1 / headphone.SCREENING_SAMPLE_RATE)
    assert 550 < freqs[int(np.argmax(spectrum))] < 650  # the interaural difference sits in the band


def test_screening_config_rules():
    from listening_test.headphone import ScreeningConfig

    cfg = ScreeningConfig.from_dict(
        {"tests": ["huggins", "antiphase"], "trials_per_test": 6, "min_correct": 5, "rule": "any"}
    )
    assert cfg.passes({"huggins": 5, "antiphase": 0})
    assert not ScreeningConfig.from_dict({"rule": "all"}).passes({"huggins": 6, "antiphase": 4})
    with pytest.raises(ValueError):
        ScreeningConfig.from_dict({"tests": ["bogus"]})
    with pytest.raises(ValueError):
        ScreeningConfig.from_dict({"trials_per_test": 3, "min_correct": 4})

"""The virtual listener's parts: auditory model, ear, psychometric function, population."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from listening_test import headphone
from listening_test.simulation.auditory import AuditoryModel, DistanceCache, threshold_in_quiet_db
from listening_test.simulation.ear import screening_choice
from listening_test.simulation.listener import ListenerParams
from listening_test.simulation.population import FAMILY_THRESHOLDS, make_population, parse_bad_workers, platform_ids
from listening_test.simulation.truth import level_threshold

SR = 16000
LEVELS = (0.0, 25.0, 50.0, 75.0, 100.0)


@pytest.fixture(scope="module")
def model():
    return AuditoryModel()


def _wav_bytes(audio, rate=SR) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio, np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_identity_is_zero_symmetric_and_cached(model, speech_16k):
    x = speech_16k
    rng = np.random.default_rng(1)
    y = (x + 0.01 * rng.standard_normal(len(x))).astype(np.float32)
    assert model.distance(x, x, SR) == 0.0
    d_xy, d_yx = model.distance(x, y, SR), model.distance(y, x, SR)
    assert d_xy > 0 and d_xy == pytest.approx(d_yx)
    cache = DistanceCache(model)
    bx, by = _wav_bytes(x), _wav_bytes(y)
    assert cache.distance(bx, bx) == 0.0
    assert cache.distance(bx, by) == pytest.approx(d_xy, rel=1e-6)
    assert cache.distance(by, bx) == pytest.approx(d_xy, rel=1e-6)
    assert cache.misses == 3  # two intensity patterns, one distance; the reverse pair was a hit


def test_masking_and_absolute_threshold(model, speech_16k):
    """Noise far below the threshold of hearing, or deep under the speech, is not heard."""
    x = speech_16k.astype(np.float64)
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(len(x))
    quiet = x + 1e-6 * noise  # about -120 dB re the speech: inaudible
    assert model.distance(x, quiet, SR, level_db_spl=90.0) == 0.0
    loud = x + 0.05 * noise
    # The same noise is more audible when the whole pair is played louder (absolute threshold).
    assert model.distance(x, loud, SR, level_db_spl=50.0) < model.distance(x, loud, SR, level_db_spl=90.0)
    assert threshold_in_quiet_db(1000.0) == pytest.approx(3.4, abs=0.5)


@pytest.mark.parametrize("family", ["noise", "reverb", "mp3", "eq", "lowpass", "clipping", "mulaw"])
def test_distance_grows_with_level(model, speech_16k, family):
    """Monotone in level on a speech clip, one ladder per family (the ladder's seed is fixed,
    as in the engine: every rung draws the same noise type, room, EQ signs)."""
    from perturbations.registry import get_family
    from perturbations.stimulus import make_stimulus

    fam = get_family(family)
    ref_i = model.band_intensity(speech_16k, SR, 93.0)
    d = []
    for level in LEVELS:
        y, _ = make_stimulus(fam, speech_16k, SR, level, seed=7)
        d.append(model.pool(model.compare_intensities(ref_i, model.band_intensity(y, SR, 93.0), SR)))
    d = np.array(d)
    assert d[-1] > 0 and d[-1] > 5 * max(d[0], 1e-3), d
    # Non-decreasing, allowing a dip of 5 % of the range (loudness matching, codec bit-rate snapping).
    assert np.all(np.diff(d) >= -0.05 * (d.max() - d.min())), d


def test_level_threshold_interpolates_and_censors():
    levels = np.array([0.0, 10.0, 20.0])
    dist = np.array([0.0, 2.0, 6.0])
    assert level_threshold(levels, dist, 4.0) == pytest.approx(15.0)
    assert level_threshold(levels, dist, 0.0) == 0.0
    assert math.isinf(level_threshold(levels, dist, 7.0))


@pytest.mark.parametrize("test", ["antiphase", "huggins"])
def test_headphone_ear_passes_and_loudspeaker_ear_does_not(test):
    rng = np.random.default_rng(3)
    trials = [headphone.make_trial(test, rng) for _ in range(12)]
    rendered = [
        ([(headphone.render_interval(s, k), headphone.SCREENING_SAMPLE_RATE) for k in range(3)], s["target"])
        for s in trials
    ]
    right = sum(screening_choice(test, iv, headphones=True, rng=rng) + 1 == t for iv, t in rendered)
    speakers = sum(screening_choice(test, iv, headphones=False, rng=rng) + 1 == t for iv, t in rendered)
    assert right == 12
    # Over loudspeakers the antiphase tone cancels (always chosen, always wrong); Huggins is a guess.
    assert speakers <= (0 if test == "antiphase" else 8)


def _listener(**kw) -> ListenerParams:
    base = dict(
        worker_id="W",
        kind="good",
        platform="mturk",
        seed=1,
        thresholds={"default": 10.0, "noise": 5.0},
        slopes={"default": 2.0},
        false_alarm=0.1,
        lapse=0.04,
        listening_level_db_spl=70.0,
    )
    return ListenerParams(**{**base, **kw})


def test_psychometric_function_and_worker_kinds():
    lst = _listener()
    assert lst.p_different(0.0, "noise") == pytest.approx(0.1)
    assert lst.p_different(5.0, "noise") == pytest.approx((0.1 + 0.96) / 2)
    assert lst.p_different(10.0, "reverb") == pytest.approx((0.1 + 0.96) / 2)  # default threshold
    assert lst.p_different(1e6, None) == pytest.approx(0.96)
    rng = np.random.default_rng(0)
    assert {_listener(kind="always_same").pair_answer(100.0, "noise", rng) for _ in range(20)} == {"same"}
    skip = _listener(kind="skip_playback")
    assert skip.play_counts(2, rng) == [0, 0] and skip.play_counts(3, rng, screening=True) != [0, 0, 0]
    assert skip.response_time_ms(rng) < 500
    with pytest.raises(ValueError):
        _listener(kind="sleepy")
    with pytest.raises(ValueError):
        _listener(false_alarm=0.7, lapse=0.4)


def test_population_is_reproducible_and_stores_everything():
    counts = parse_bad_workers("random=2,same=1,skip=1,headphones=1", 20)
    assert counts == {"random_clicker": 2, "always_same": 1, "skip_playback": 1, "no_headphones": 1}
    assert sum(parse_bad_workers("0.25", 20).values()) == 5
    with pytest.raises(ValueError):
        parse_bad_workers("lazy=2", 20)
    with pytest.raises(ValueError):
        parse_bad_workers("random=30", 20)
    a = make_population(20, np.random.default_rng(5), counts)
    b = make_population(20, np.random.default_rng(5), counts)
    assert [x.to_dict() for x in a] == [y.to_dict() for y in b]
    assert len({x.worker_id for x in a}) == 20
    assert sum(x.kind != "good" for x in a) == 5
    for x in a:
        assert set(FAMILY_THRESHOLDS) <= set(x.thresholds)
        assert ListenerParams.from_dict(json.loads(json.dumps(x.to_dict()))) == x
        ids = x.platform_ids
        assert ids.get("workerId", ids.get("PROLIFIC_PID")) == x.worker_id
    # Thresholds vary log-normally around the family means.
    noise = np.array([x.thresholds["noise"] for x in a])
    assert 0.1 < np.std(np.log(noise)) < 1.0
    worker, params = platform_ids("mturk", np.random.default_rng(0))
    assert worker.startswith("A") and len(params["assignmentId"]) == 30


def test_stimulus_index_recognises_dithered_deliveries(manifest_path, tmp_path):
    """The server re-encodes every delivery with its own ±1 LSB dither (web.audio), so the
    simulator must recognise a clip by its samples, not its bytes; a clip that is no stimulus
    is not recognised, and a recognised one maps back to the stimulus file's own bytes."""
    from listening_test.clips import load_clip
    from listening_test.simulation.truth import StimulusIndex
    from listening_test.web.audio import dithered_wav
    from tests.listening_test.lt_helpers import make_app

    index = StimulusIndex(manifest_path)
    app = make_app(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with app.test_request_context():
        for info in index.rows:
            audio, rate = load_clip(str(manifest_path.parent), str(info.path.relative_to(manifest_path.parent)))
            first, second = (dithered_wav(audio, rate, f"token-{info.stimulus_id}-{k}") for k in (1, 2))
            assert first != second != info.path.read_bytes()
            assert index.lookup(first) == info and index.lookup(second) == info
            assert index.canonical_bytes(first) == info.path.read_bytes()
            # 4 LSB RMS of extra noise (twice the tolerance) makes it no stimulus of the set
            noisy = audio + 4 / 32768 * np.random.default_rng(0).standard_normal(audio.shape)
            other = dithered_wav(noisy, rate, f"token-{info.stimulus_id}-3")
            assert index.lookup(other) is None and index.canonical_bytes(other) == other
    assert index.lookup(b"not audio") is None

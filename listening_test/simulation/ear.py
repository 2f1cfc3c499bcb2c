"""The "ear" a virtual listener answers the headphone screen with.

The listener is never told the right answer: it decides from the three stereo
intervals it fetched, like a person does.

- Over headphones each ear gets its own channel. The antiphase test ("which tone is
  the quietest?") is answered by the binaural level of each interval; the Huggins test
  ("which sound contains a faint tone?") by the interaural anti-correlation in narrow
  bands: the Huggins interval has one band where the ears are in antiphase, which is
  what makes the dichotic pitch.
- Over loudspeakers (a listener who "fails the headphone screen") both ears receive
  the acoustic sum of the two channels (laptop speakers are close together; a little
  of the difference survives), each through its own diffuse room response. The
  antiphase tone then mostly cancels and sounds quietest (the wrong answer, as Woods
  et al. 2017 designed), and the room decorrelates the ears in every band of every
  interval, so the Huggins interval carries no dichotic pitch: the listener guesses.

Decisions add Gaussian internal noise to the cue (``noise`` in the cue's units:
dB for antiphase, correlation units for Huggins).
"""

from __future__ import annotations

import numpy as np

#: Fraction of the channel difference a room adds back over loudspeakers.
ROOM_LEAK = 0.1
HUGGINS_BAND_LOW_HZ = 200.0
HUGGINS_BAND_HIGH_HZ = 2000.0
HUGGINS_BAND_WIDTH = 0.08  # relative width of the analysis bands (about 1/9 octave)


ROOM_DECAY_S = 0.05


def room_responses(
    rng: np.random.Generator, sample_rate: int, decay_s: float = ROOM_DECAY_S
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent diffuse-field impulse responses (direct sound + exponential noise tail)."""
    n = int(4 * decay_s * sample_rate)
    env = np.exp(-np.arange(n) / (decay_s * sample_rate))
    out = []
    for _ in range(2):
        h = rng.standard_normal(n) * env
        h[0] += 1.0
        out.append(h / np.sqrt(np.sum(h**2)))
    return out[0], out[1]


def ear_signals(
    stereo: np.ndarray, headphones: bool, rng: np.random.Generator | None = None, sample_rate: int = 44100
) -> tuple[np.ndarray, np.ndarray]:
    """What reaches the (left, right) eardrums for a (samples, 2) clip.

    Loudspeakers need ``rng`` (the room responses are drawn from it).
    """
    from scipy.signal import fftconvolve

    stereo = np.asarray(stereo, dtype=np.float64)
    if stereo.ndim == 1:
        stereo = np.stack([stereo, stereo], axis=1)
    left, right = stereo[:, 0], stereo[:, 1]
    if headphones:
        return left, right
    if rng is None:
        raise ValueError("a loudspeaker ear needs an rng for its room")
    source = 0.5 * (left + right) + ROOM_LEAK * 0.5 * (left - right)
    h_left, h_right = room_responses(rng, sample_rate)
    n = len(source)
    return fftconvolve(source, h_left)[:n], fftconvolve(source, h_right)[:n]


def binaural_level_db(left: np.ndarray, right: np.ndarray) -> float:
    power = 0.5 * (np.mean(left**2) + np.mean(right**2))
    return float(10.0 * np.log10(power + 1e-20))


def dichotic_cue(left: np.ndarray, right: np.ndarray, sample_rate: int) -> float:
    """Strongest interaural anti-correlation over narrow bands, in [0, 1]: (1 − ρ)/2."""
    spec_l = np.fft.rfft(left)
    spec_r = np.fft.rfft(right)
    freqs = np.fft.rfftfreq(len(left), 1.0 / sample_rate)
    cross = (spec_l * np.conj(spec_r)).real
    pl, pr = np.abs(spec_l) ** 2, np.abs(spec_r) ** 2
    best = 0.0
    centre = HUGGINS_BAND_LOW_HZ
    while centre <= HUGGINS_BAND_HIGH_HZ:
        band = (freqs >= centre * (1 - HUGGINS_BAND_WIDTH / 2)) & (freqs <= centre * (1 + HUGGINS_BAND_WIDTH / 2))
        if band.any():
            denom = np.sqrt(pl[band].sum() * pr[band].sum())
            if denom > 0:
                rho = cross[band].sum() / denom
                best = max(best, (1.0 - rho) / 2.0)
        centre *= 1 + HUGGINS_BAND_WIDTH / 2
    return float(best)


def screening_choice(
    test: str,
    intervals: list[tuple[np.ndarray, int]],
    *,
    headphones: bool,
    rng: np.random.Generator,
    noise: float = 0.05,
) -> int:
    """0-based index of the interval a listener picks in a 3-interval screening trial."""
    cues = []
    for stereo, rate in intervals:
        left, right = ear_signals(stereo, headphones, rng, rate)
        if test == "antiphase":
            cues.append(-binaural_level_db(left, right))  # quietest wins
        elif test == "huggins":
            cues.append(dichotic_cue(left, right, rate))
        else:
            raise ValueError(f"unknown screening test {test!r}")
    scale = noise if test == "huggins" else 20.0 * noise  # 0.05 → 1 dB of level noise
    noisy = np.asarray(cues) + rng.normal(0.0, scale, len(cues))
    return int(np.argmax(noisy))

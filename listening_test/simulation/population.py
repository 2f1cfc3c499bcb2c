"""A crowd of virtual listeners with known parameters.

Thresholds are log-normal around per-family means in the auditory model's distance
units: ``threshold = mean_f · exp(σ_g·z_listener + σ_f·z_listener,family)``, a general
sensitivity shared by all of a listener's families plus a family-specific part.
Weibull shapes β are log-normal around ``slope_mean``, γ and λ are Beta-distributed,
and each listener sets the volume clip to one of a few comfortable levels.

``FAMILY_THRESHOLDS`` were calibrated once on the demo corpus (6 clips of data/speech,
listening level 70 dB SPL): each is the median distance at level 45 of its family's
ladder, so the population's median JND falls near the middle of the 0..100 ladder,
where adaptive procedures have room on both sides. mp3 and mulaw distances stay flat
and then jump, so theirs sit a little higher (JNDs near 55-60); the low-pass distance
saturates above level 40 (cutoff below ~1 kHz), so its threshold sits on the steep part
of the ladder instead (JNDs near 25), where the level JND is well defined. They are a
modelling choice, not a claim about human thresholds; pass ``family_thresholds`` to
change them.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .listener import BAD_KINDS, DEFAULT_KEY, KINDS, ListenerParams

FAMILY_THRESHOLDS: dict[str, float] = {
    "noise": 60.0,
    "reverb": 2.5,
    "mp3": 5.0,
    "eq": 30.0,
    "lowpass": 200.0,
    "clipping": 65.0,
    "mulaw": 1.0,
    "chain": 60.0,
    DEFAULT_KEY: 20.0,
}
LISTENING_LEVELS_DB_SPL = (64.0, 70.0, 76.0)


@dataclass
class PopulationConfig:
    family_thresholds: dict[str, float] = field(default_factory=lambda: dict(FAMILY_THRESHOLDS))
    sigma_general: float = 0.35  # log-SD of the listener's overall sensitivity
    sigma_family: float = 0.20  # log-SD of the family-specific part
    slope_mean: float = 1.5  # Weibull shape β in distance (a logistic in log d)
    slope_sigma: float = 0.25
    false_alarm_mean: float = 0.05
    lapse_mean: float = 0.03
    platforms: tuple[str, ...] = ("mturk", "prolific")

    def __post_init__(self):
        if DEFAULT_KEY not in self.family_thresholds:
            self.family_thresholds = {**self.family_thresholds, DEFAULT_KEY: FAMILY_THRESHOLDS[DEFAULT_KEY]}
        bad = [p for p in self.platforms if p not in ("mturk", "prolific")]
        if bad or not self.platforms:
            raise ValueError(f"platforms must be mturk and/or prolific, got {list(self.platforms)}")


def parse_bad_workers(spec: str | float | None, n: int) -> dict[str, int]:
    """Counts per bad kind from a fraction ("0.2", split evenly) or "kind=count,...".

    Kind names may be abbreviated: random, same, skip, headphones.
    """
    counts = dict.fromkeys(BAD_KINDS, 0)
    if spec is None or spec == "" or spec == 0:
        return counts
    aliases = {
        "random": "random_clicker",
        "same": "always_same",
        "skip": "skip_playback",
        "headphones": "no_headphones",
        "no_headphone": "no_headphones",
        **{k: k for k in BAD_KINDS},
    }
    text = str(spec).strip()
    try:
        fraction = float(text)
    except ValueError:
        fraction = None
    if fraction is not None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"a bad-worker fraction must be in [0, 1], got {fraction}")
        total = int(round(fraction * n))
        for i in range(total):
            counts[BAD_KINDS[i % len(BAD_KINDS)]] += 1
        return counts
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in aliases or not value.strip().isdigit():
            raise ValueError(
                f"bad-worker spec {part!r}: use kind=count with kind in "
                f"{', '.join(sorted(aliases))}, or a fraction such as 0.2"
            )
        counts[aliases[name]] += int(value)
    if sum(counts.values()) > n:
        raise ValueError(f"{sum(counts.values())} bad workers requested but only {n} participants")
    return counts


def _id(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))


def platform_ids(platform: str, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """(worker id, landing URL parameters) shaped like the platform's real ones."""
    upper = string.ascii_uppercase + string.digits
    if platform == "mturk":
        worker = "A" + _id(rng, upper, 13)
        return worker, {
            "workerId": worker,
            "assignmentId": _id(rng, upper, 30),
            "hitId": _id(rng, upper, 30),
            "turkSubmitTo": "https://workersandbox.mturk.com",
        }
    hexdigits = "0123456789abcdef"
    worker = _id(rng, hexdigits, 24)
    return worker, {"PROLIFIC_PID": worker, "STUDY_ID": _id(rng, hexdigits, 24), "SESSION_ID": _id(rng, hexdigits, 24)}


def make_population(
    n: int, rng: np.random.Generator, bad_workers: dict[str, int] | None = None, config: PopulationConfig | None = None
) -> list[ListenerParams]:
    """``n`` listeners; ``bad_workers`` gives counts per bad kind, the rest are good.

    Kinds are shuffled so that bad workers arrive throughout the run. Every draw comes
    from ``rng``; each listener also gets its own seed for its answers.
    """
    config = config or PopulationConfig()
    bad_workers = {k: v for k, v in (bad_workers or {}).items() if v}
    unknown = [k for k in bad_workers if k not in BAD_KINDS]
    if unknown:
        raise ValueError(f"unknown bad-worker kinds {unknown}; valid: {', '.join(BAD_KINDS)}")
    n_bad = sum(bad_workers.values())
    if n_bad > n:
        raise ValueError(f"{n_bad} bad workers requested but only {n} participants")
    kinds = [k for k, c in bad_workers.items() for _ in range(c)] + ["good"] * (n - n_bad)
    kinds = [kinds[i] for i in rng.permutation(n)]
    families = sorted(config.family_thresholds)
    listeners, seen = [], set()
    for kind in kinds:
        general = rng.normal()
        thresholds, slopes = {}, {}
        for fam in families:
            z = config.sigma_general * general + config.sigma_family * rng.normal()
            thresholds[fam] = float(config.family_thresholds[fam] * np.exp(z))
            slopes[fam] = float(config.slope_mean * np.exp(config.slope_sigma * rng.normal()))
        platform = config.platforms[int(rng.integers(len(config.platforms)))]
        worker, params = platform_ids(platform, rng)
        while worker in seen:
            worker, params = platform_ids(platform, rng)
        seen.add(worker)
        listeners.append(
            ListenerParams(
                worker_id=worker,
                kind=kind,
                platform=platform,
                seed=int(rng.integers(2**31 - 1)),
                thresholds=thresholds,
                slopes=slopes,
                false_alarm=float(rng.beta(2, 2 / config.false_alarm_mean - 2)) if config.false_alarm_mean else 0.0,
                lapse=float(rng.beta(2, 2 / config.lapse_mean - 2)) if config.lapse_mean else 0.0,
                listening_level_db_spl=float(LISTENING_LEVELS_DB_SPL[int(rng.integers(len(LISTENING_LEVELS_DB_SPL)))]),
                screening_noise=0.05,
                replay_probability=float(rng.uniform(0.0, 0.3)),
                response_time_median_ms=float(rng.uniform(700, 2000)),
                platform_ids=params,
            )
        )
    return listeners


def kind_counts(listeners: list[ListenerParams]) -> dict[str, int]:
    c = Counter(listener.kind for listener in listeners)
    return {k: c.get(k, 0) for k in KINDS}

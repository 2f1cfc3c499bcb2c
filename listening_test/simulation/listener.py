"""Virtual listeners: a psychometric function per family on the auditory model's distance.

P(different | d) = γ + (1 − γ − λ) · F(d),   F(d) = 1 − 2^(−(d / threshold_f)^β_f)

``d`` is ``AuditoryModel``'s internal distance between the two clips of a trial;
``threshold_f`` (distance units) and the Weibull shape ``β_f`` belong to family f,
γ (false-alarm rate) and λ (lapse rate) to the listener. F(threshold) = 0.5, so
``threshold_f`` is the distance at which P(different) is halfway between γ and 1 − λ,
the jndlab JND convention (``procedures/observer.py``). A Weibull in d is a logistic
in log d: scale-free, and F(0) = 0, so identical pairs give P(different) = γ.

How does a listener know the family of a trial, which the server never sends? A person
recognises what kind of degradation they hear (hiss, muffling, echo); the simulator
stands in for that recognition by matching the fetched clip's samples (deliveries are
dithered) against the stimulus set's manifest (``StimulusIndex``). The decision itself
comes from the audio only. Without a
manifest, or for an unknown clip, the listener uses its ``default`` parameters.

Worker kinds (``KINDS``):

- ``good``: listens and follows its psychometric function.
- ``random_clicker``: plays the clips, then answers at random (P = 0.5).
- ``always_same``: plays the clips, answers "same" to every pair.
- ``skip_playback``: does the headphone screen properly (it is a gate), then never
  fetches or plays a clip again: zero play counts, fast responses, random answers.
- ``no_headphones``: listens over loudspeakers: fails the headphone screen unless it
  guesses right; if it gets through, it judges pairs like a good listener.

The first three also pass the screen honestly: the catch trials are what flags them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

KINDS = ("good", "random_clicker", "always_same", "skip_playback", "no_headphones")
BAD_KINDS = KINDS[1:]
DEFAULT_KEY = "default"


@dataclass
class ListenerParams:
    """Everything that defines one virtual listener (stored as its ground truth)."""

    worker_id: str
    kind: str
    platform: str  # mturk | prolific
    seed: int
    thresholds: dict[str, float]  # family → distance at F = 0.5 (plus "default")
    slopes: dict[str, float]  # family → Weibull shape β (plus "default")
    false_alarm: float  # γ
    lapse: float  # λ
    listening_level_db_spl: float  # where the listener sets the volume clip
    screening_noise: float = 0.05  # internal noise of the headphone-test decisions
    replay_probability: float = 0.15
    response_time_median_ms: float = 1200.0
    # A/B preference trials: SD of the internal log ratio of the two outputs' distances
    # to the reference (``ab_listener.PsychometricABListener``).
    ab_noise_sd: float = 0.3
    platform_ids: dict[str, str] = field(default_factory=dict)  # the landing's URL parameters

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown listener kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not (0 <= self.false_alarm < 1 and 0 <= self.lapse < 1 and self.false_alarm + self.lapse < 1):
            raise ValueError("need 0 <= γ, λ and γ + λ < 1")
        for name, table in (("thresholds", self.thresholds), ("slopes", self.slopes)):
            if DEFAULT_KEY not in table:
                raise ValueError(f"{name} needs a {DEFAULT_KEY!r} entry")
            if any(not v > 0 for v in table.values()):
                raise ValueError(f"{name} must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ListenerParams:
        return cls(**data)

    # -- the psychometric function ---------------------------------------------------

    def threshold(self, family: str | None) -> float:
        return self.thresholds.get(family or DEFAULT_KEY, self.thresholds[DEFAULT_KEY])

    def slope(self, family: str | None) -> float:
        return self.slopes.get(family or DEFAULT_KEY, self.slopes[DEFAULT_KEY])

    def p_different(self, distance: float, family: str | None) -> float:
        """P("different") of a listener who listens (kinds good and no_headphones)."""
        d = max(float(distance), 0.0)
        f = 1.0 - math.pow(2.0, -((d / self.threshold(family)) ** self.slope(family)))
        return self.false_alarm + (1.0 - self.false_alarm - self.lapse) * f

    @property
    def listens(self) -> bool:
        return self.kind in ("good", "no_headphones")

    @property
    def has_headphones(self) -> bool:
        return self.kind != "no_headphones"

    @property
    def plays_audio(self) -> bool:
        """Fetches and plays the trial clips (after the screen)."""
        return self.kind != "skip_playback"

    def pair_answer(self, distance: float | None, family: str | None, rng: np.random.Generator) -> str:
        """ "same" or "different" for one pair (``distance`` None: not listened to)."""
        if self.kind == "always_same":
            return "same"
        if self.kind in ("random_clicker", "skip_playback") or distance is None:
            return "different" if rng.random() < 0.5 else "same"
        return "different" if rng.random() < self.p_different(distance, family) else "same"

    def ab_answer(self, d_a: float | None, d_b: float | None, rng: np.random.Generator) -> str:
        """ "A" or "B": which clip this listener says is closer to the reference.

        ``always_same`` workers stand for a position bias here (always "A"); clickers
        and workers who skip playback answer at random; listeners compare the two
        auditory-model distances (``None``: not listened to).
        """
        from .ab_listener import PsychometricABListener

        if self.kind == "always_same":
            return "A"
        if self.kind in ("random_clicker", "skip_playback") or d_a is None or d_b is None:
            return "A" if rng.random() < 0.5 else "B"
        choice = PsychometricABListener(noise_sd=self.ab_noise_sd, lapse=self.lapse).choose(d_a, d_b, rng)
        return choice.upper()

    def response_time_ms(self, rng: np.random.Generator) -> int:
        if self.kind in ("skip_playback", "random_clicker"):
            return int(rng.uniform(150, 450))
        return int(min(60_000, self.response_time_median_ms * math.exp(rng.normal(0.0, 0.4))))

    def play_counts(self, n_clips: int, rng: np.random.Generator, *, screening: bool = False) -> list[int]:
        if not self.plays_audio and not screening:
            return [0] * n_clips
        return [1 + int(rng.random() < self.replay_probability) for _ in range(n_clips)]

"""Stimulus files as the server delivers them: decoded, and checked against their rows.

Used by the clip route (``web.audio``), which re-encodes every delivery, and by the
store, which checks a trial's files before voiding it (``store.void_trial``).
No Flask, no database.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from werkzeug.security import safe_join


class ClipFault(Exception):
    """A stimulus file that cannot be delivered; ``str()`` names the file and the reason."""


def load_clip(
    audio_root: str, path: str, *, sample_rate: int | None = None, num_samples: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode one stimulus file: float64 ``(samples,)`` or ``(samples, channels)`` and its rate.

    ``sample_rate`` (Hz) and ``num_samples`` (samples per channel) are what the stimulus
    row recorded when the experiment was created; when given, a file that decodes to
    anything else is a fault. (The manifest has no channel count, so channels are not
    compared here; the importer checks a stimulus set's channels at creation.)

    Raises:
        ClipFault: the path leaves ``audio_root``, the file is missing or unreadable,
            it does not decode, holds no samples, or its rate or length differ from
            the row's (the message names the file and both values).
    """
    full = safe_join(audio_root, path)
    if full is None:
        raise ClipFault(f"{path!r} lies outside the stimulus folder {audio_root}")
    if not Path(full).is_file():
        raise ClipFault(f"{full}: file not found")
    try:
        audio, rate = sf.read(full, dtype="float64", always_2d=False)
    except (RuntimeError, OSError, sf.LibsndfileError) as error:
        raise ClipFault(f"{full}: cannot be read or decoded ({error})") from None
    if audio.size == 0:
        raise ClipFault(f"{full}: holds no samples")
    if sample_rate is not None and int(rate) != int(sample_rate):
        raise ClipFault(f"{full}: sample rate {int(rate)} Hz, but the stimulus row records {int(sample_rate)} Hz")
    if num_samples is not None and audio.shape[0] != int(num_samples):
        raise ClipFault(
            f"{full}: {audio.shape[0]} samples, but the stimulus row records {int(num_samples)} "
            "(changed after the experiment was created?)"
        )
    return audio, int(rate)

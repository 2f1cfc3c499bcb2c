"""Audio under opaque tokens: ``GET /audio/<token>``.

A token is random, names one clip of one trial, and works only for the session it
was made for, so the URL says nothing about the stimulus, its level or its role.

Nothing in a clip's response but the sound tells two clips apart (threat model in
API.md): every delivery is decoded and re-encoded as 16-bit PCM WAV with its own
TPDF dither (±1 LSB, about -101 dBFS RMS, far below audibility) drawn from a
generator keyed by HMAC(SECRET_KEY, token). So two deliveries of one stimulus
(the two clips of an identical-pair catch trial, the reference in every trial)
differ byte for byte, while one token always gives the same bytes (HTTP Range
requests stay consistent). Clips of one trial have the same length, so the same
Content-Length. The ETag is an HMAC of the token (opaque, per delivery); there is
no Last-Modified and no Content-Disposition (no file name, no file time).

A clip fetch is a read (``mark_read_only``: on SQLite no write lock) of one Core row:
every trial's page fetches its clips, so this is on the participant's hot path too.
A clip whose file is missing, does not decode, or decodes to another sample rate or
length than its stimulus row records (a file truncated or replaced after the experiment
was created: the length itself would tell the clips apart) is answered 410
``clip_unavailable`` and logged with its file; the page then asks ``POST /api/session/clip-fault``, which
voids the trial (store.void_trial) so the participant moves on.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import re

import numpy as np
import soundfile as sf
from flask import Blueprint, abort, current_app, jsonify, request, send_file, url_for
from sqlalchemy import bindparam, select

from .. import headphone
from ..clips import ClipFault, load_clip
from ..db import connection, mark_read_only
from ..models import AudioToken, Experiment, Session, Stimulus
from .security import session_public_id_from_request

log = logging.getLogger(__name__)
bp = Blueprint("audio", __name__)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TOKENS = AudioToken.__table__
_SELECT_TOKEN = (
    select(
        _TOKENS.c.slot,
        _TOKENS.c.generated,
        Session.public_id,
        Experiment.audio_root,
        Stimulus.path,
        Stimulus.sample_rate,
        Stimulus.num_samples,
    )
    .select_from(_TOKENS)
    .join(Session.__table__, Session.id == _TOKENS.c.session_id)
    .join(Experiment.__table__, Experiment.id == Session.experiment_id)
    .outerjoin(Stimulus.__table__, Stimulus.id == _TOKENS.c.stimulus_id)
    .where(_TOKENS.c.token == bindparam("token"))
)


AUDIO_URL_PREFIXES_KEPT = 8  # script roots whose clip-URL prefix is cached per app
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def audio_url(token: str) -> str:
    """The clip's URL (``url_for("audio.clip")``). Audio tokens are URL-safe base64
    (``flow.trials.random_token``): their URL is the route's prefix plus the token, so the
    prefix is built once per app and script root (``url_for`` per clip was ~2 % of an
    answer's CPU, issue 18); any other token goes through ``url_for``."""
    if not token or not _URL_SAFE.issuperset(token):
        return url_for("audio.clip", token=token)
    prefixes = current_app.extensions.setdefault("jndlab_audio_url_prefix", {})
    root = request.script_root
    prefix = prefixes.get(root)
    if prefix is None:
        prefix = url_for("audio.clip", token="_")[:-1]  # noqa: S106 - a placeholder, not a secret
        # The script root comes from the request (a proxy may pass a client's SCRIPT_NAME
        # on): only the first few are kept, so no client can grow the cache.
        if len(prefixes) < AUDIO_URL_PREFIXES_KEPT:
            prefixes[root] = prefix
    return prefix + token


def _delivery_key(token: str, purpose: str) -> bytes:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, f"audio-{purpose}:{token}".encode(), hashlib.sha256).digest()


def dithered_wav(audio: np.ndarray, sample_rate: int, token: str) -> bytes:
    """16-bit PCM WAV of ``audio`` (float, full scale ±1) with TPDF dither of ±1 LSB
    drawn from a generator keyed by the token: unique bytes per token, same per request."""
    seed = int.from_bytes(_delivery_key(token, "dither")[:16], "big")
    rng = np.random.default_rng(seed)
    tpdf = rng.random(audio.shape) - rng.random(audio.shape)  # triangular on (-1, 1) LSB
    pcm = np.clip(np.round(audio * 32767.0 + tpdf), -32768, 32767).astype(np.int16)
    out = io.BytesIO()
    sf.write(out, pcm, sample_rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def opaque_etag(token: str) -> str:
    return _delivery_key(token, "etag")[:16].hex()


@bp.get("/audio/<path:token>")
def clip(token: str):
    # <path:> so that traversal attempts reach us and get a plain 404.
    public_id = session_public_id_from_request()
    if not TOKEN_RE.match(token) or public_id is None:
        abort(404)
    mark_read_only()
    row = connection().execute(_SELECT_TOKEN, {"token": token}).first()
    if row is None or row.public_id != public_id:
        abort(404)  # someone else's token looks exactly like no token
    max_age = current_app.config["AUDIO_MAX_AGE_S"]
    if row.generated is not None:
        audio, rate = sf.read(io.BytesIO(headphone.interval_wav(row.generated["spec"], row.slot)), dtype="float64")
    else:
        if row.path is None:
            abort(404)
        try:
            audio, rate = load_clip(row.audio_root, row.path, sample_rate=row.sample_rate, num_samples=row.num_samples)
        except ClipFault as fault:
            log.error("clip unavailable (session %s, token %s): %s", public_id, token, fault)
            response = jsonify(
                {
                    "error": {
                        "status": 410,
                        "code": "clip_unavailable",
                        "message": "this clip cannot be played; the page will skip this trial",
                        "retryable": False,
                    }
                }
            )
            response.status_code = 410
            response.headers["Cache-Control"] = "no-store"
            return response
    data = dithered_wav(audio, rate, token)
    response = send_file(
        io.BytesIO(data),
        mimetype="audio/wav",
        conditional=True,
        etag=opaque_etag(token),
        max_age=max_age,
        last_modified=None,
    )
    response.cache_control.private = True
    response.cache_control.public = False
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

"""Audio under opaque tokens: ``GET /audio/<token>``.

A token is random, names one clip of one trial, and works only for the session it
was made for, so the URL says nothing about the stimulus, its level or its role.
Files are served with ``conditional=True`` (HTTP Range, ETag, Last-Modified) and
a private Cache-Control: a token's content never changes.

A clip fetch is a read (``mark_read_only``: on SQLite no write lock) of one Core row:
every trial's page fetches its clips, so this is on the participant's hot path too.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from flask import Blueprint, abort, current_app, send_file, url_for
from sqlalchemy import bindparam, select
from werkzeug.security import safe_join

from . import headphone
from .db import connection, mark_read_only
from .models import AudioToken, Experiment, Session, Stimulus
from .security import session_public_id_from_request

bp = Blueprint("audio", __name__)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TOKENS = AudioToken.__table__
_SELECT_TOKEN = (
    select(_TOKENS.c.slot, _TOKENS.c.generated, Session.public_id, Experiment.audio_root, Stimulus.path)
    .select_from(_TOKENS)
    .join(Session.__table__, Session.id == _TOKENS.c.session_id)
    .join(Experiment.__table__, Experiment.id == Session.experiment_id)
    .outerjoin(Stimulus.__table__, Stimulus.id == _TOKENS.c.stimulus_id)
    .where(_TOKENS.c.token == bindparam("token")))


def audio_url(token: str) -> str:
    return url_for("audio.clip", token=token)


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
        data = headphone.interval_wav(row.generated["spec"], row.slot)
        response = send_file(io.BytesIO(data), mimetype="audio/wav", conditional=True,
                             etag=f"{token}", max_age=max_age, last_modified=None)
    else:
        if row.path is None:
            abort(404)
        full = safe_join(row.audio_root, row.path)
        if full is None or not Path(full).is_file():
            abort(404)
        response = send_file(full, mimetype=_mimetype(full), conditional=True, etag=True, max_age=max_age)
    response.cache_control.private = True
    response.cache_control.public = False
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _mimetype(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}.get(
        suffix, "application/octet-stream")

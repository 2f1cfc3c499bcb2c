"""The HTML pages: the participant's page (``/e/<slug>``) and the admin dashboard.

Plain templates plus static JS/CSS (``templates/``, ``static/``), no build step.
The pages carry no data of their own: the participant page talks to ``/api``
(API.md), the admin pages to ``/admin/api`` with a token the browser keeps in
sessionStorage. Nothing about a trial (level, family, which clip is the
reference, file paths) ever reaches the HTML.
"""

from __future__ import annotations

import math

from flask import Blueprint, abort, jsonify, render_template, request
from sqlalchemy import select

from .. import headphone, store
from ..db import db
from ..errors import ApiError
from ..estimates import ensure_estimate
from ..models import Session, Trial
from .security import authenticated_public_id

bp = Blueprint("pages", __name__)

# MTurk shows an ExternalQuestion in an iframe on its own hosts; the completion
# form posts there. Prolific is reached by a plain navigation (not a form).
MTURK_ORIGINS = "https://www.mturk.com https://workersandbox.mturk.com"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    f"form-action 'self' {MTURK_ORIGINS}; frame-ancestors 'self' {MTURK_ORIGINS}"
)


def _page(html: str, status: int = 200):
    return (
        html,
        status,
        {
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            # Worker IDs travel in the query string: keep them out of Referer headers.
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@bp.get("/e/<slug>")
def participant(slug: str):
    experiment = store.experiment_by_slug(slug)
    if experiment is None:
        return _page(render_template("not_found.html"), 404)
    estimate = ensure_estimate(db.session, experiment)
    main = estimate["main_trials"]["mean"] if estimate else None
    minutes = estimate["minutes"] if estimate else None
    return _page(
        render_template(
            "participant.html",
            slug=experiment.slug,
            title=experiment.name,
            test_type=experiment.test_type,
            draft=experiment.status == "draft",
            main_estimate=round(main) if main else "",
            minutes=math.ceil(minutes["mean"]) if minutes else None,
            minutes_p90=math.ceil(minutes["p90"]) if minutes else None,
            consent_text=experiment.consent_text,
            description=experiment.description,
        )
    )


@bp.get("/e/<slug>/example/<test>.wav")
def screening_example(slug: str, test: str):
    """A public example of a headphone-check sound (nothing secret: its answer is told)."""
    if test not in headphone.TESTS or len(slug) > 64:
        abort(404)
    return headphone.example_wav(test), 200, {"Content-Type": "audio/wav", "Cache-Control": "public, max-age=3600"}


@bp.route("/e/<slug>/screening/<int:trial_id>/played", methods=["GET", "POST"])
def screening_played(slug: str, trial_id: int):
    """The headphone check's once-only promise, kept by the server across reloads.

    GET: {"played": bool} for the session's open screening trial ``trial_id``; POST
    (CSRF-checked) records that its set has started playing and answers whether it
    had before. 404 when ``trial_id`` is not the session's open screening trial.
    """
    public_id = authenticated_public_id(csrf=request.method == "POST")
    session = db.session.scalar(select(Session).where(Session.public_id == public_id))
    if session is None or session.stage != "screening":
        raise ApiError(404, "trial_not_found", "no open headphone-check trial in this session")
    open_trial = db.session.scalar(
        select(Trial).where(
            Trial.id == trial_id, Trial.session_id == session.id, Trial.kind == "screening", Trial.answered.is_(False)
        )
    )
    if open_trial is None:
        raise ApiError(404, "trial_not_found", "no open headphone-check trial with this id in this session")
    state = dict(session.schedule_state or {})
    played = trial_id in (state.get("screening_played") or [])
    if request.method == "POST" and not played:
        state["screening_played"] = [*(state.get("screening_played") or []), trial_id]
        session.schedule_state = state
        db.session.commit()
    return jsonify({"played": played})


@bp.get("/admin/")
def admin_index():
    return _page(render_template("admin_index.html"))


@bp.get("/admin/e/<slug>")
def admin_dashboard(slug: str):
    if len(slug) > 64:
        abort(404)
    # The slug is checked by the JSON API (with auth); the page itself holds no data.
    return _page(render_template("admin_dashboard.html", slug=slug))

"""The HTML pages: the participant's page (``/e/<slug>``) and the admin dashboard.

Plain templates plus static JS/CSS (``templates/``, ``static/``), no build step.
The pages carry no data of their own: the participant page talks to ``/api``
(API.md), the admin pages to ``/admin/api`` with a token the browser keeps in
sessionStorage. Nothing about a trial (level, family, which clip is the
reference, file paths) ever reaches the HTML.
"""
from __future__ import annotations

import math

from flask import Blueprint, abort, render_template
from sqlalchemy import select

from .db import db
from .flow_config import FlowConfig
from .manifest_import import REFERENCE_FAMILY
from .models import Experiment, Stimulus
from .procedures import make_procedure, paired

bp = Blueprint("pages", __name__)

# MTurk shows an ExternalQuestion in an iframe on its own hosts; the completion
# form posts there. Prolific is reached by a plain navigation (not a form).
MTURK_ORIGINS = "https://www.mturk.com https://workersandbox.mturk.com"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       f"form-action 'self' {MTURK_ORIGINS}; frame-ancestors 'self' {MTURK_ORIGINS}")


def _page(html: str, status: int = 200):
    return html, status, {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-store",
        # Worker IDs travel in the query string: keep them out of Referer headers.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


@bp.get("/e/<slug>")
def participant(slug: str):
    experiment = db.session.scalar(select(Experiment).where(Experiment.slug == slug))
    if experiment is None:
        return _page(render_template("not_found.html"), 404)
    return _page(render_template("participant.html", slug=experiment.slug, title=experiment.name,
                                 test_type=experiment.test_type,
                                 main_estimate=main_trials_estimate(experiment) or ""))


def main_trials_estimate(experiment: Experiment) -> int | None:
    """About how many main trials a session has, for the progress bar (None if unknown).

    The same for every participant: tracks x the procedure's ``max_trials``, plus
    catch trials, capped by ``max_main_trials``. Adaptive procedures may stop sooner.
    """
    try:
        flow = FlowConfig.from_dict(experiment.config)
        rows = db.session.execute(select(Stimulus.reference, Stimulus.family, Stimulus.level).where(
            Stimulus.experiment_id == experiment.id, Stimulus.family != REFERENCE_FAMILY)).all()
        ladders: dict[tuple[str, str], list[float]] = {}
        for ref, fam, level in rows:
            ladders.setdefault((ref, fam), []).append(float(level))
        if not ladders:
            return None
        if experiment.test_type == "ab_preference":
            return _ab_trials_estimate(experiment, flow, ladders)
        procedure = make_procedure(experiment.procedure, next(iter(ladders.values())),
                                   **experiment.procedure_config)
        max_trials = procedure.config.get("max_trials")
    except (ValueError, TypeError):
        return None
    if not max_trials:
        return flow.max_main_trials if flow.max_main_trials < 100 else None
    n_refs = len({ref for ref, _ in ladders})
    n_fams = len({fam for _, fam in ladders})
    tracks = min(flow.references_per_participant, n_refs) * min(flow.families_per_participant or n_fams, n_fams)
    return min(flow.max_main_trials, math.ceil(tracks * max_trials / (1.0 - flow.catch_rate)))


def _ab_trials_estimate(experiment: Experiment, flow: FlowConfig, ladders) -> int:
    """Items x system pairs x repeats, plus catch trials: exact up to the catch rounding."""
    n_items = len({item for item, _ in ladders})
    pairs = paired.system_pairs({system for _, system in ladders}, flow.anchor_system)
    repeats = paired.PairedConfig.from_dict(experiment.procedure_config).repeats
    trials = min(flow.references_per_participant, n_items) * len(pairs) * repeats
    return min(flow.max_main_trials, math.ceil(trials / (1.0 - flow.catch_rate)))


@bp.get("/admin/")
def admin_index():
    return _page(render_template("admin_index.html"))


@bp.get("/admin/e/<slug>")
def admin_dashboard(slug: str):
    if len(slug) > 64:
        abort(404)
    # The slug is checked by the JSON API (with auth); the page itself holds no data.
    return _page(render_template("admin_dashboard.html", slug=slug))

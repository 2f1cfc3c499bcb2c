"""Admin JSON/CSV API (``/admin/api/...``) behind a bearer token or a password hash.

``Authorization: Bearer <ADMIN_TOKEN>``, or HTTP Basic with any user name and a
password matching ``ADMIN_PASSWORD_HASH`` (werkzeug ``generate_password_hash``).
No credentials -> 401; wrong credentials -> 403; admin not configured -> 403.
POSTs need a JSON body, which a cross-site form cannot send (CSRF for Basic auth).
"""
from __future__ import annotations

import hmac
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.security import check_password_hash

from . import export, stats
from .db import db
from .manifest_import import ManifestError, create_experiment
from .models import Experiment
from .mturk import external_question_xml
from .security import ApiError, json_body, require_fields

bp = Blueprint("admin", __name__, url_prefix="/admin/api")


@bp.before_request
def _require_admin():
    token = current_app.config.get("ADMIN_TOKEN")
    pw_hash = current_app.config.get("ADMIN_PASSWORD_HASH")
    if not token and not pw_hash:
        raise ApiError(403, "admin_disabled", "set ADMIN_TOKEN or ADMIN_PASSWORD_HASH to enable the admin API")
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "admin_auth_required", "send Authorization: Bearer <ADMIN_TOKEN> or Basic auth")
    if header.startswith("Bearer ") and token:
        if hmac.compare_digest(header[7:].strip().encode(), str(token).encode()):
            return None
    elif request.authorization is not None and request.authorization.type == "basic" and pw_hash:
        if check_password_hash(pw_hash, request.authorization.password or ""):
            return None
    raise ApiError(403, "admin_auth_failed", "invalid admin credentials")


def _experiment(slug: str) -> Experiment:
    experiment = db.session.scalar(select(Experiment).where(Experiment.slug == slug))
    if experiment is None:
        raise ApiError(404, "experiment_not_found", f"no experiment {slug!r}")
    return experiment


def _summary(e: Experiment) -> dict:
    return {"slug": e.slug, "name": e.name, "status": e.status, "test_type": e.test_type,
            "procedure": e.procedure, "procedure_config": e.procedure_config, "config": e.config,
            "manifest_path": e.manifest_path, "reward_cents": e.reward_cents,
            "target_judgments": e.target_judgments, "created_at": e.created_at.isoformat()}


@bp.get("/experiments")
def list_experiments():
    rows = db.session.scalars(select(Experiment).order_by(Experiment.id)).all()
    return jsonify({"experiments": [_summary(e) for e in rows]})


@bp.post("/experiments")
def create():
    body = json_body()
    require_fields(body, {"manifest": str},
                   {"procedure": str, "name": str, "procedure_config": dict, "config": dict, "reward_cents": int,
                    "target_judgments": int, "prolific_completion_code": str, "test_type": str})
    try:
        experiment = create_experiment(
            db.session, Path(body["manifest"]), procedure=body.get("procedure"), name=body.get("name"),
            procedure_config=body.get("procedure_config"), config=body.get("config"),
            test_type=body.get("test_type") or "same_different", reward_cents=body.get("reward_cents"),
            target_judgments=body.get("target_judgments"),
            prolific_completion_code=body.get("prolific_completion_code"))
    except (ManifestError, ValueError) as error:
        db.session.rollback()
        raise ApiError(422, "invalid_experiment", str(error)) from None
    db.session.commit()
    return jsonify({"experiment": _summary(experiment)}), 201


@bp.get("/experiments/<slug>")
def show(slug: str):
    return jsonify({"experiment": _summary(_experiment(slug))})


@bp.post("/experiments/<slug>/status")
def set_status(slug: str):
    body = json_body()
    require_fields(body, {"status": str})
    if body["status"] not in ("active", "closed"):
        raise ApiError(422, "invalid_fields", "status must be 'active' or 'closed'",
                       fields={"status": "active|closed"})
    experiment = _experiment(slug)
    experiment.status = body["status"]
    db.session.commit()
    return jsonify({"experiment": _summary(experiment)})


@bp.get("/experiments/<slug>/stats")
def experiment_stats(slug: str):
    return jsonify(stats.experiment_stats(_experiment(slug)))


@bp.get("/experiments/<slug>/export.csv")
def export_csv(slug: str):
    experiment = _experiment(slug)
    body = "".join(export.judgments_csv(experiment.id))
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{experiment.slug}-judgments.csv"'})


@bp.get("/experiments/<slug>/triplets.txt")
def export_triplets(slug: str):
    experiment = _experiment(slug)
    kinds = tuple(k for k in request.args.get("kinds", "main").split(",") if k in export.PAIR_KINDS) or ("main",)
    include = request.args.get("include_screened_out") in ("1", "true")
    try:
        body = "".join(export.triplets(experiment.id, kinds, include))
    except ValueError as error:  # an A/B experiment has no same/different labels
        raise ApiError(409, "wrong_test_type", str(error)) from None
    return Response(body, mimetype="text/plain",
                    headers={"Content-Disposition": f'attachment; filename="{experiment.slug}-triplets.txt"'})


@bp.get("/experiments/<slug>/mturk-question.xml")
def mturk_question(slug: str):
    experiment = _experiment(slug)
    base = request.args.get("base_url") or current_app.config.get("PUBLIC_BASE_URL") or ""
    url = f"{base.rstrip('/')}/e/{experiment.slug}"
    try:
        xml = external_question_xml(url, int(request.args.get("frame_height", 0)))
    except ValueError as error:
        raise ApiError(422, "invalid_fields", str(error)) from None
    return Response(xml, mimetype="application/xml")

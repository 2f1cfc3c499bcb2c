"""Admin JSON/CSV API (``/admin/api/...``) behind a bearer token or a password hash.

``Authorization: Bearer <ADMIN_TOKEN>``, or HTTP Basic with any user name and a
password matching ``ADMIN_PASSWORD_HASH`` (werkzeug ``generate_password_hash``).
No credentials -> 401; wrong credentials -> 403; admin not configured -> 403.
POSTs need a JSON body, which a cross-site form cannot send (CSRF for Basic auth).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.security import check_password_hash

from .. import export, stats, store
from ..db import db
from ..estimates import ensure_estimate
from ..manifest_import import ManifestError, check_recruitment_settings, create_experiment
from ..models import Experiment
from ..platforms import recruitment
from ..platforms.mturk import external_question_xml
from ..screening import PAIR_KINDS
from .security import (
    ApiError,
    admin_login_attempt,
    admin_login_succeeded,
    check_admin_password,
    json_body,
    require_fields,
)

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
    # A right bearer token (a cheap constant-time compare) passes before any limit;
    # every other attempt is counted before a password hash is computed (security.py).
    if header.startswith("Bearer ") and token and hmac.compare_digest(header[7:].strip().encode(), str(token).encode()):
        return
    admin_login_attempt()
    if (
        not header.startswith("Bearer ")
        and request.authorization is not None
        and request.authorization.type == "basic"
        and pw_hash
        and check_admin_password(check_password_hash, pw_hash, request.authorization.password or "")
    ):
        admin_login_succeeded()
        return
    raise ApiError(403, "admin_auth_failed", "invalid admin credentials")


def _summary(e: Experiment) -> dict:
    return {
        "slug": e.slug,
        "name": e.name,
        "status": e.status,
        "closed_reason": e.closed_reason,
        "test_type": e.test_type,
        "procedure": e.procedure,
        "procedure_config": e.procedure_config,
        "config": e.config,
        "manifest_path": e.manifest_path,
        "reward_cents": e.reward_cents,
        "target_judgments": e.target_judgments,
        "target_participants": e.target_participants,
        "prolific_completion_code": e.prolific_completion_code,
        "prolific_screened_out_code": e.prolific_screened_out_code,
        "consent_text": e.consent_text,
        "description": e.description,
        "estimate": e.estimate,
        "max_sessions_per_worker": e.max_sessions_per_worker,
        "mturk_environment": e.mturk_environment,
        "launched_at": e.launched_at.isoformat() if e.launched_at else None,
        "created_at": e.created_at.isoformat(),
    }


def stimulus_dirs() -> list[Path]:
    """Where the stimulus-set picker looks for ``manifest.csv`` files: ``STIMULUS_DIRS``
    (os.pathsep-separated; config or environment), else ``data/`` under the working folder."""
    value = current_app.config.get("STIMULUS_DIRS") or os.environ.get("STIMULUS_DIRS")
    return [Path(p) for p in str(value).split(os.pathsep) if p] if value else [Path.cwd() / "data"]


def find_stimulus_sets(max_depth: int = 4) -> list[dict]:
    """Every ``manifest.csv`` within ``max_depth`` folders of ``stimulus_dirs()``, plus the
    manifests of existing experiments: [{"manifest": absolute path, "name": folder name, "rows": n}]."""
    found: dict[str, dict] = {}
    for root in stimulus_dirs():
        root = root.resolve()
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            depth = len(Path(dirpath).relative_to(root).parts)
            if depth >= max_depth:
                dirnames[:] = []
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if "manifest.csv" in filenames:
                path = Path(dirpath) / "manifest.csv"
                found[str(path)] = {"manifest": str(path), "name": Path(dirpath).name}
    for manifest in db.session.scalars(select(Experiment.manifest_path).distinct()):
        if manifest and Path(manifest).is_file():
            found.setdefault(
                str(Path(manifest).resolve()),
                {"manifest": str(Path(manifest).resolve()), "name": Path(manifest).parent.name},
            )
    for entry in found.values():
        try:
            with open(entry["manifest"], encoding="utf-8") as handle:
                entry["rows"] = max(0, sum(1 for _ in handle) - 1)
        except OSError:
            entry["rows"] = None
    return sorted(found.values(), key=lambda e: e["manifest"])


@bp.get("/stimulus-sets")
def stimulus_sets():
    return jsonify({"stimulus_sets": find_stimulus_sets(), "searched": [str(p) for p in stimulus_dirs()]})


@bp.get("/experiments")
def list_experiments():
    rows = db.session.scalars(select(Experiment).order_by(Experiment.id)).all()
    return jsonify({"experiments": [_summary(e) for e in rows]})


# Every setting of POST /experiments with its JSON type; `experiment create` takes the same.
CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "manifest": str,
    "procedure": str,
    "name": str,
    "procedure_config": dict,
    "config": dict,
    "reward_cents": int,
    "target_judgments": int,
    "target_participants": int,
    "prolific_completion_code": str,
    "prolific_screened_out_code": str,
    "test_type": str,
    "consent_text": str,
    "description": str,
    "launch": bool,
    "verify_hashes": bool,
    "mturk_environment": str,
    "max_sessions_per_worker": (int, str),
}


@bp.post("/experiments")
def create():
    body = json_body()
    unknown = sorted(set(body) - set(CREATE_FIELDS))
    if unknown:
        raise ApiError(
            422,
            "unknown_fields",
            f"unknown field(s) {unknown}; valid: {sorted(CREATE_FIELDS)}",
            fields={name: "unknown field" for name in unknown},
        )
    require_fields(body, {"manifest": str}, {k: v for k, v in CREATE_FIELDS.items() if k != "manifest"})
    from ..flow_config import DEFAULT_PROCEDURE

    test_type = body.get("test_type") or "same_different"
    # As the CLI's --sessions-per-worker: absent -> 1, an integer, or "unlimited" / null -> no limit.
    sessions = body.get("max_sessions_per_worker", 1)
    if sessions == "unlimited":
        sessions = None
    elif isinstance(sessions, str):
        raise ApiError(
            422,
            "invalid_fields",
            "some fields are missing or have the wrong type",
            fields={"max_sessions_per_worker": "expected integer or 'unlimited'"},
        )
    try:
        check_recruitment_settings(
            target_participants=body.get("target_participants"),
            prolific_screened_out_code=body.get("prolific_screened_out_code") or None,
        )
        experiment = create_experiment(
            db.session,
            Path(body["manifest"]),
            name=body.get("name"),
            # The CLI's defaults: the procedure of the test type when none is named.
            procedure=body.get("procedure") or DEFAULT_PROCEDURE.get(test_type, "bayesian"),
            procedure_config=body.get("procedure_config"),
            config=body.get("config"),
            test_type=test_type,
            reward_cents=body.get("reward_cents"),
            target_judgments=body.get("target_judgments"),
            prolific_completion_code=body.get("prolific_completion_code") or None,
            verify_hashes=bool(body.get("verify_hashes", False)),
            max_sessions_per_worker=sessions,
            mturk_environment=body.get("mturk_environment"),
        )
        recruitment.prepare_new_experiment(
            db.session,
            experiment,
            draft=not body.get("launch", False),
            target_participants=body.get("target_participants"),
            prolific_screened_out_code=body.get("prolific_screened_out_code") or None,
            consent_text=body.get("consent_text") or None,
            description=body.get("description") or None,
        )
    except ManifestError as error:
        db.session.rollback()
        where = {k: v for k, v in (("line", error.line), ("field", error.field)) if v is not None}
        raise ApiError(422, "invalid_experiment", str(error), **where) from None
    except ValueError as error:
        db.session.rollback()
        raise ApiError(422, "invalid_experiment", str(error)) from None
    db.session.commit()
    return jsonify({"experiment": _summary(experiment)}), 201


@bp.get("/experiments/<slug>")
def show(slug: str):
    experiment = store.find_experiment(slug)
    ensure_estimate(db.session, experiment)  # experiments created without one get it on first view
    return jsonify({"experiment": _summary(experiment)})


@bp.post("/experiments/<slug>/status")
def set_status(slug: str):
    body = json_body()
    require_fields(body, {"status": str})
    if body["status"] not in ("active", "closed"):
        raise ApiError(422, "invalid_fields", "status must be 'active' or 'closed'", fields={"status": "active|closed"})
    experiment = store.find_experiment(slug)
    try:
        recruitment.set_status(experiment, body["status"])
    except ValueError as error:
        db.session.rollback()
        raise ApiError(409, "status_refused", str(error)) from None
    db.session.commit()
    return jsonify({"experiment": _summary(experiment)})


@bp.post("/experiments/<slug>/launch")
def launch(slug: str):
    """Open a draft: its test sessions are deleted."""
    json_body()
    experiment = store.find_experiment(slug)
    try:
        removed = recruitment.launch(experiment)
    except ValueError as error:
        raise ApiError(409, "not_a_draft", str(error)) from None
    db.session.commit()
    return jsonify({"experiment": _summary(experiment), "test_sessions_deleted": removed})


@bp.get("/experiments/<slug>/workers/<path:worker>")
def worker(slug: str, worker: str):
    """One worker's drill-down: screening verdict, sessions (start, duration), every trial."""
    experiment = store.find_experiment(slug)
    try:
        return jsonify(stats.worker_trials(experiment.id, worker))
    except LookupError as error:
        raise ApiError(404, "worker_not_found", str(error)) from None


def _workers_arg() -> str:
    workers = request.args.get("workers", "kept")
    if workers not in export.WORKER_SETS:
        raise ApiError(422, "invalid_fields", "workers must be 'kept' or 'all'", fields={"workers": "kept|all"})
    return workers


@bp.get("/experiments/<slug>/stats")
def experiment_stats(slug: str):
    return jsonify(stats.experiment_stats(store.find_experiment(slug)))


@bp.get("/experiments/<slug>/export.csv")
def export_csv(slug: str):
    experiment = store.find_experiment(slug)
    workers = _workers_arg()
    body = "".join(export.judgments_csv(experiment.id, workers))
    name = export.export_filename(experiment.slug, "judgments", workers)
    return Response(body, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/experiments/<slug>/triplets.txt")
def export_triplets(slug: str):
    experiment = store.find_experiment(slug)
    kinds = tuple(k for k in request.args.get("kinds", "main").split(",") if k in PAIR_KINDS) or ("main",)
    include = request.args.get("include_screened_out") in ("1", "true")
    workers = _workers_arg()
    try:
        body = "".join(export.triplets(experiment.id, kinds, include, workers))
    except ValueError as error:  # an A/B experiment has no same/different labels
        raise ApiError(409, "wrong_test_type", str(error)) from None
    name = export.export_filename(experiment.slug, "triplets", workers, kinds)
    return Response(body, mimetype="text/plain", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/experiments/<slug>/mturk-question.xml")
def mturk_question(slug: str):
    experiment = store.find_experiment(slug)
    base = request.args.get("base_url") or current_app.config.get("PUBLIC_BASE_URL") or ""
    url = f"{base.rstrip('/')}/e/{experiment.slug}"
    try:
        xml = external_question_xml(url, int(request.args.get("frame_height", 0)))
    except ValueError as error:
        raise ApiError(422, "invalid_fields", str(error)) from None
    return Response(xml, mimetype="application/xml")

"""Posting an experiment to Amazon Mechanical Turk: HITs, qualifications, records.

Each HIT is an ExternalQuestion (``platforms.mturk``) that frames
``<PUBLIC_BASE_URL>/e/<slug>``; MTurk appends workerId, assignmentId, hitId and
turkSubmitTo, and the app does the rest (landing, preview mode, externalSubmit).
The commands (``python -m listening_test mturk ...``) are ``cli.mturk``'s.

- Qualification requirements by default: approval rate >= 95 %, >= 100 approved
  HITs, locale in US, GB, CA, AU, IE, NZ (``qualification_requirements``).
- Every created HIT is recorded as one JSON line appended to a file
  (default ``instance/mturk_hits.jsonl`` next to the default SQLite database),
  written as soon as MTurk answers, so a failure part-way leaves a record of the
  HITs that do exist.
- Earlier workers are kept out by a qualification of our own (``exclusion_qualification``).

boto3 is imported lazily (``make_client``); tests stub it with botocore's Stubber and
never touch the network.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from .mturk import external_question_xml

REGION = "us-east-1"  # the MTurk requester API lives only here
ENDPOINTS = {
    "sandbox": "https://mturk-requester-sandbox.us-east-1.amazonaws.com",
    "production": "https://mturk-requester.us-east-1.amazonaws.com",
}
PREVIEW_URLS = {
    "sandbox": "https://workersandbox.mturk.com/mturk/preview?groupId={}",
    "production": "https://worker.mturk.com/mturk/preview?groupId={}",
}
# System qualification types (identical in the sandbox and in production).
QUAL_PERCENT_APPROVED = "000000000000000000L0"
QUAL_NUMBER_APPROVED = "00000000000000000040"
QUAL_LOCALE = "00000000000000000071"
DEFAULT_COUNTRIES = ("US", "GB", "CA", "AU", "IE", "NZ")
MAX_REWARD = Decimal("100.00")


class MTurkError(click.ClickException):
    """A one-line reason; the command exits non-zero."""


@dataclass
class HitSpec:
    """Everything a CreateHIT call needs except the client."""

    url: str
    reward: str  # USD, "1.50"
    assignments: int
    title: str
    description: str
    keywords: str = "audio, listening, perception, headphones, research"
    duration_s: int = 45 * 60  # time a worker has once they accept
    lifetime_s: int = 3 * 24 * 3600  # how long the HIT is listed
    auto_approve_s: int = 3 * 24 * 3600
    frame_height: int = 0
    annotation: str = ""
    qualifications: list[dict[str, Any]] = field(default_factory=list)

    def create_hit_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "MaxAssignments": self.assignments,
            "AutoApprovalDelayInSeconds": self.auto_approve_s,
            "LifetimeInSeconds": self.lifetime_s,
            "AssignmentDurationInSeconds": self.duration_s,
            "Reward": self.reward,
            "Title": self.title,
            "Keywords": self.keywords,
            "Description": self.description,
            "Question": external_question_xml(self.url, self.frame_height),
            "QualificationRequirements": self.qualifications,
        }
        if self.annotation:
            kwargs["RequesterAnnotation"] = self.annotation[:255]
        return kwargs


def parse_reward(value: str) -> str:
    """ "1.5" -> "1.50"; MTurk wants a string in USD with cents. Raises ValueError."""
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation:
        raise ValueError(f"reward must be an amount in USD like 1.50, got {value!r}") from None
    if not amount.is_finite() or amount < Decimal("0.01") or amount > MAX_REWARD:
        raise ValueError(f"reward must lie between 0.01 and {MAX_REWARD} USD, got {value!r}")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"reward has more than two decimals: {value!r}")
    return f"{amount:.2f}"


def qualification_requirements(
    approval_rate: int | None = 95, min_approved: int | None = 100, countries: Sequence[str] | None = DEFAULT_COUNTRIES
) -> list[dict[str, Any]]:
    """The QualificationRequirements list; None or empty turns a requirement off."""
    quals: list[dict[str, Any]] = []
    if approval_rate is not None:
        if not 0 <= approval_rate <= 100:
            raise ValueError(f"approval rate must be 0..100, got {approval_rate}")
        quals.append(
            {
                "QualificationTypeId": QUAL_PERCENT_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [int(approval_rate)],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            }
        )
    if min_approved is not None:
        if min_approved < 0:
            raise ValueError(f"min approved HITs must be >= 0, got {min_approved}")
        quals.append(
            {
                "QualificationTypeId": QUAL_NUMBER_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [int(min_approved)],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            }
        )
    if countries:
        codes = [c.strip().upper() for c in countries if c.strip()]
        bad = [c for c in codes if len(c) != 2 or not c.isalpha()]
        if bad:
            raise ValueError(f"countries must be ISO 3166-1 alpha-2 codes (US, GB, ...), got {bad}")
        quals.append(
            {
                "QualificationTypeId": QUAL_LOCALE,
                "Comparator": "In",
                "LocaleValues": [{"Country": c} for c in codes],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            }
        )
    return quals


def parse_countries(value: str) -> list[str]:
    value = value.strip()
    if value.lower() in ("", "any", "none"):
        return []
    return [c for c in value.split(",") if c.strip()]


def estimated_cost(reward: str, assignments: int, hits: int) -> Decimal:
    """Rewards plus MTurk's commission: 20 %, 40 % for HITs with 10 or more assignments."""
    fee = Decimal("0.40") if assignments >= 10 else Decimal("0.20")
    per = Decimal(reward) * (1 + fee)
    return (per * assignments * hits).quantize(Decimal("0.01"))


def make_client(environment: str):
    """A boto3 MTurk client for ``environment`` ("sandbox" | "production"); clear error without credentials."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise MTurkError("boto3 is not installed: pip install boto3") from None
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise MTurkError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
            "(a requester account linked to MTurk; sandbox: https://requestersandbox.mturk.com)"
        )
    return session.client("mturk", region_name=REGION, endpoint_url=ENDPOINTS[environment])


def _client_error_message(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    err = response.get("Error", {})
    code, message = err.get("Code"), err.get("Message")
    if code:
        return f"{code}: {message}" if message else str(code)
    return str(error) or error.__class__.__name__


@dataclass
class CreatedHit:
    hit_id: str
    hit_type_id: str
    group_id: str | None
    preview_url: str
    expires: str | None


def create_hits(
    client,
    spec: HitSpec,
    n_hits: int,
    environment: str,
    *,
    slug: str,
    record_path: Path | None,
    echo: Callable[[str], None] = lambda _m: None,
) -> list[CreatedHit]:
    """Create ``n_hits`` HITs; record each one as soon as it exists. Returns them."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        balance = client.get_account_balance()
    except NoCredentialsError:
        raise MTurkError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise MTurkError(f"MTurk refused the account check ({environment}): {_client_error_message(error)}") from None
    echo(f"MTurk {environment}: available balance ${balance.get('AvailableBalance', '?')}")
    created: list[CreatedHit] = []
    kwargs = spec.create_hit_kwargs()
    for _ in range(n_hits):
        token = f"jndlab-{uuid.uuid4().hex}"  # makes a retried call safe: MTurk refuses a reused token
        try:
            hit = client.create_hit(**kwargs, UniqueRequestToken=token)["HIT"]
        except (ClientError, BotoCoreError) as error:
            done = f" ({len(created)} created before it, recorded in {record_path})" if created else ""
            raise MTurkError(f"CreateHIT failed: {_client_error_message(error)}{done}") from None
        expiration = hit.get("Expiration")
        item = CreatedHit(
            hit_id=hit["HITId"],
            hit_type_id=hit["HITTypeId"],
            group_id=hit.get("HITGroupId"),
            preview_url=PREVIEW_URLS[environment].format(hit["HITTypeId"]),
            expires=expiration.isoformat() if hasattr(expiration, "isoformat") else expiration,
        )
        created.append(item)
        if record_path is not None:
            _record(
                record_path,
                {
                    "experiment": slug,
                    "environment": environment,
                    **asdict(item),
                    "url": spec.url,
                    "reward": spec.reward,
                    "assignments": spec.assignments,
                    "unique_request_token": token,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        echo(f"created HIT {item.hit_id}  preview: {item.preview_url}")
    return created


def _record(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the command ----------------------------------------------------------------------


def default_record_path() -> Path:
    return Path(os.getcwd()) / "instance" / "mturk_hits.jsonl"


def earlier_workers(experiment_ids: list[int]) -> list[dict[str, str]]:
    """Every worker who holds a session in these experiments: worker_id, platform, stage
    (their latest session's), experiment slug; sorted by worker id."""
    from sqlalchemy import select

    from ..db import db
    from ..models import Experiment, Participant, Session

    rows = db.session.execute(
        select(Participant.platform_worker_id, Participant.platform, Session.stage, Experiment.slug, Session.attempt)
        .join(Session, Session.participant_id == Participant.id)
        .join(Experiment, Experiment.id == Participant.experiment_id)
        .where(Participant.experiment_id.in_(experiment_ids), Participant.platform != "link")
        .order_by(Participant.platform_worker_id, Session.attempt)
    ).all()
    latest = {(r.platform_worker_id, r.platform, r.slug): r.stage for r in rows}
    return [
        {"worker_id": w, "platform": p, "stage": stage, "experiment": slug}
        for (w, p, slug), stage in sorted(latest.items())
    ]


def exclusion_qualification(client, slug: str, worker_ids: list[str], echo: Callable[[str], None]) -> str:
    """A qualification type of our own (``jndlab-took-part-<slug>``, created once) granted
    to ``worker_ids``; HITs that require it ``DoesNotExist`` hide from them. Returns its id.

    Raises:
        MTurkError: MTurk refused a call.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    name = f"jndlab-took-part-{slug}"[:128]
    try:
        found = client.list_qualification_types(
            Query=name, MustBeRequestable=False, MustBeOwnedByCaller=True, MaxResults=100
        ).get("QualificationTypes", [])
        match = [q for q in found if q.get("Name") == name]
        if match:
            qid = match[0]["QualificationTypeId"]
        else:
            qid = client.create_qualification_type(
                Name=name,
                Keywords="jndlab",
                QualificationTypeStatus="Active",
                Description=f"Took part in the jndlab listening test {slug!r}: each worker takes it once.",
            )["QualificationType"]["QualificationTypeId"]
        for worker in worker_ids:
            client.associate_qualification_with_worker(
                QualificationTypeId=qid, WorkerId=worker, IntegerValue=1, SendNotification=False
            )
    except (ClientError, BotoCoreError) as error:
        raise MTurkError(f"excluding earlier workers failed: {_client_error_message(error)}") from None
    echo(f"excluding {len(worker_ids)} earlier worker(s) with qualification {qid} ({name})")
    return qid

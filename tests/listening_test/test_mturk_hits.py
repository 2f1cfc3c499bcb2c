"""``mturk create-hits`` with botocore's Stubber: the exact requests, the record file, the errors.

No test reaches the network: every client here is stubbed, and the credential-less
case fails before any request is built.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import boto3
import pytest
from botocore.stub import ANY, Stubber

from listening_test.platforms import mturk_hits
from listening_test.platforms.mturk import EXTERNAL_QUESTION_NS
from listening_test.platforms.mturk_hits import (
    QUAL_LOCALE,
    QUAL_NUMBER_APPROVED,
    QUAL_PERCENT_APPROVED,
    estimated_cost,
    parse_reward,
    qualification_requirements,
    read_records,
)
from tests.listening_test.lt_helpers import create_hits

BASE = "https://study.example.org/jnd"


def stubbed_client(environment="sandbox"):
    client = boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=mturk_hits.ENDPOINTS[environment],
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret-test",
    )
    return client, Stubber(client)


def hit_reply(i: int) -> dict:
    return {
        "HIT": {
            "HITId": f"3HIT{i:04d}",
            "HITTypeId": "3TYPE0001",
            "HITGroupId": "3GROUP0001",
            "Expiration": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
            "MaxAssignments": 9,
        }
    }


@pytest.fixture
def stub(monkeypatch):
    """Patch the command's client factory; yield (stubber, environments asked for)."""
    client, stubber = stubbed_client()
    asked: list[str] = []

    def factory(environment):
        asked.append(environment)
        return client

    monkeypatch.setattr(mturk_hits, "make_client", factory)
    with stubber:
        yield stubber, asked
    stubber.assert_no_pending_responses()


def expected_create_params(assignments=9, reward="1.50", countries=("US", "GB", "CA", "AU", "IE", "NZ")):
    return {
        "MaxAssignments": assignments,
        "AutoApprovalDelayInSeconds": 72 * 3600,
        "LifetimeInSeconds": 72 * 3600,
        "AssignmentDurationInSeconds": 45 * 60,
        "Reward": reward,
        "Title": "Listening test: same or different? (demo)",
        "Keywords": ANY,
        "Description": ANY,
        "Question": ANY,
        "RequesterAnnotation": "jndlab:demo",
        "UniqueRequestToken": ANY,
        "QualificationRequirements": [
            {
                "QualificationTypeId": QUAL_PERCENT_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [95],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            },
            {
                "QualificationTypeId": QUAL_NUMBER_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [100],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            },
            {
                "QualificationTypeId": QUAL_LOCALE,
                "Comparator": "In",
                "LocaleValues": [{"Country": c} for c in countries],
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            },
        ],
    }


def test_create_hits_in_the_sandbox_records_every_hit(runner, stub, tmp_path):
    stubber, asked = stub
    record = tmp_path / "hits.jsonl"
    stubber.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
    for i in range(2):
        stubber.add_response("create_hit", hit_reply(i), expected_create_params())
    result = create_hits(runner, BASE + "/", "1.5", "9", "--hits", "2", "--record", str(record))
    assert result.exit_code == 0, result.output
    assert asked == ["sandbox"]
    assert "workersandbox.mturk.com/mturk/preview?groupId=3TYPE0001" in result.output
    rows = read_records(record)
    assert [r["hit_id"] for r in rows] == ["3HIT0000", "3HIT0001"]
    assert {r["environment"] for r in rows} == {"sandbox"} and rows[0]["url"] == BASE + "/e/demo"
    assert rows[0]["unique_request_token"] != rows[1]["unique_request_token"]
    assert rows[0]["reward"] == "1.50" and rows[0]["expires"].startswith("2030-01-01")


def test_the_question_is_the_external_question_for_the_participant_page(runner, stub, tmp_path):
    stubber, _ = stub
    seen = {}
    stubber.add_response("get_account_balance", {"AvailableBalance": "1.00"}, {})
    stubber.add_response("create_hit", hit_reply(0), expected_create_params(assignments=3, countries=("US",)))
    original = mturk_hits.HitSpec.create_hit_kwargs

    def spy(self):
        seen.update(original(self))
        return seen

    mturk_hits.HitSpec.create_hit_kwargs = spy
    try:
        result = create_hits(runner, BASE, "1.50", "3", "--countries", "us", "--record", str(tmp_path / "r.jsonl"))
    finally:
        mturk_hits.HitSpec.create_hit_kwargs = original
    assert result.exit_code == 0, result.output
    root = ET.fromstring(seen["Question"].split("\n", 1)[1])  # noqa: S314 - our own request
    assert root.tag == f"{{{EXTERNAL_QUESTION_NS}}}ExternalQuestion"
    assert root.find(f"{{{EXTERNAL_QUESTION_NS}}}ExternalURL").text == BASE + "/e/demo"


def test_production_needs_the_flag_and_a_confirmation(runner, stub, tmp_path):
    stubber, asked = stub
    args = [
        "mturk",
        "create-hits",
        "--experiment",
        "demo",
        "--url",
        BASE,
        "--reward",
        "2.00",
        "--assignments",
        "10",
        "--production",
        "--record",
        str(tmp_path / "r.jsonl"),
    ]
    refused = runner.invoke(args=args, input="n\n")
    assert refused.exit_code != 0 and "PRODUCTION" in refused.output and "$28.00" in refused.output
    assert asked == [] and not (tmp_path / "r.jsonl").exists()  # nothing was sent
    stubber.add_response("get_account_balance", {"AvailableBalance": "50.00"}, {})
    stubber.add_response("create_hit", hit_reply(7), expected_create_params(assignments=10, reward="2.00"))
    accepted = runner.invoke(args=args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert asked == ["production"] and "worker.mturk.com/mturk/preview" in accepted.output
    assert read_records(tmp_path / "r.jsonl")[0]["environment"] == "production"


def test_no_credentials_is_a_clear_error_and_sends_nothing(runner, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.setattr("botocore.credentials.ContainerProvider.load", lambda self: None)
    result = create_hits(runner, BASE, "1.50", "3", "--record", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1
    assert "no AWS credentials" in result.output and "AWS_ACCESS_KEY_ID" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r.jsonl").exists()


def test_mturk_errors_are_one_line_and_hits_made_before_stay_recorded(runner, stub, tmp_path):
    stubber, _ = stub
    record = tmp_path / "r.jsonl"
    stubber.add_response("get_account_balance", {"AvailableBalance": "3.00"}, {})
    stubber.add_response("create_hit", hit_reply(0), expected_create_params(assignments=2, reward="1.00"))
    stubber.add_client_error(
        "create_hit",
        service_error_code="RequestError",
        service_message="You do not have enough funds to create this HIT.",
    )
    result = create_hits(runner, BASE, "1.00", "2", "--hits", "3", "--record", str(record))
    assert result.exit_code == 1
    assert "CreateHIT failed: RequestError: You do not have enough funds" in result.output
    assert "1 created before it" in result.output
    assert [r["hit_id"] for r in read_records(record)] == ["3HIT0000"]


def test_bad_credentials_fail_at_the_balance_check(runner, stub, tmp_path):
    stubber, _ = stub
    stubber.add_client_error(
        "get_account_balance",
        service_error_code="UnrecognizedClientException",
        service_message="The security token included in the request is invalid.",
    )
    result = create_hits(runner, BASE, "1.00", "2", "--record", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1 and "UnrecognizedClientException" in result.output
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--experiment", "nope", "--url", BASE, "--reward", "1", "--assignments", "1"], "no experiment 'nope'"),
        (["--experiment", "demo", "--url", "http://insecure.example", "--reward", "1", "--assignments", "1"], "https"),
        (["--experiment", "demo", "--reward", "1", "--assignments", "1"], "no public URL"),
        (["--experiment", "demo", "--url", BASE, "--reward", "1.234", "--assignments", "1"], "two decimals"),
        (["--experiment", "demo", "--url", BASE, "--reward", "abc", "--assignments", "1"], "amount in USD"),
        (["--experiment", "demo", "--url", BASE, "--assignments", "1"], "no reward"),
        (
            ["--experiment", "demo", "--url", BASE, "--reward", "1", "--assignments", "1", "--countries", "USA"],
            "alpha-2",
        ),
    ],
)
def test_bad_arguments_fail_before_any_aws_call(runner, monkeypatch, args, message):
    monkeypatch.setattr(mturk_hits, "make_client", lambda env: pytest.fail("no client may be made"))
    result = runner.invoke(args=["mturk", "create-hits", *args])
    assert result.exit_code != 0 and message in result.output, result.output


def test_dry_run_and_question_xml_need_no_aws(runner, monkeypatch):
    monkeypatch.setattr(mturk_hits, "make_client", lambda env: pytest.fail("no client may be made"))
    dry = create_hits(runner, BASE, "1", "4", "--no-qualifications", "--dry-run")
    assert dry.exit_code == 0 and '"QualificationRequirements": []' in dry.output and "sandbox" in dry.output
    xml = runner.invoke(args=["mturk", "question-xml", "--experiment", "demo", "--url", BASE])
    assert xml.exit_code == 0 and f"<ExternalURL>{BASE}/e/demo</ExternalURL>" in xml.output


def test_helpers():
    assert parse_reward("1.5") == "1.50" and parse_reward("$0.75") == "0.75"
    for bad in ("0", "-1", "100.01", "nan", "1e3"):
        with pytest.raises(ValueError):
            parse_reward(bad)
    assert estimated_cost("1.50", 9, 2) == estimated_cost("1.50", 9, 1) * 2
    assert str(estimated_cost("1.00", 9, 1)) == "10.80" and str(estimated_cost("1.00", 10, 1)) == "14.00"
    assert qualification_requirements(None, None, []) == []
    assert [q["QualificationTypeId"] for q in qualification_requirements(90, None, ["de"])] == [
        QUAL_PERCENT_APPROVED,
        QUAL_LOCALE,
    ]

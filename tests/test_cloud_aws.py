"""The AWS collector against the bundled estate in moto on 127.0.0.1: the facts it reads,
the exact read-only IAM policy it needs, and how a refusal shows.

Every client has ``endpoint_url`` set to the local server and fixed fake credentials:
nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("moto")

import boto3
from botocore.awsrequest import AWSResponse

from harness.checks.cloud import judge_encryption, judge_trails
from harness.cloud.aws import (
    ACTIONS,
    PROGRESS_FROM,
    AwsScope,
    Reader,
    env_kind,
    grants,
    iam_action,
    min_tls,
)
from harness.cloud.aws_read import read_estate
from harness.cloud.facts import ENV_ACCESS_KEY, ENV_PLAINTEXT_CREDENTIAL, ENV_REFERENCE
from harness.config import Config
from harness.outcome import Status
from targets import aws_reference

POLICY = Path(__file__).resolve().parents[1] / "docs" / "iam-policy-aws.json"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    aws_reference.reset(url)  # moto's state is the process's: another module's may be there
    aws_reference.Estate(url, frozenset()).build()
    yield url
    aws_reference.reset(url)
    server.stop()


def session(hooks: dict[str, Any] | None = None) -> boto3.Session:
    s = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    for event, handler in (hooks or {}).items():
        s.events.register(event, handler)
    return s


def reader(endpoint: str, hooks: dict[str, Any] | None = None) -> Reader:
    scope = AwsScope(regions=("us-east-1",), endpoint_url=endpoint)
    return Reader(scope, progress=lambda line: None, session=session(hooks))


def test_the_collector_reads_the_estate_the_reference_builds(endpoint):
    facts = read_estate(reader(endpoint))
    assert facts.account == aws_reference.ACCOUNT
    assert not facts.unread
    kinds = sorted({s.kind for s in facts.stores})
    assert kinds == [
        "bucket",
        "function-environment",
        "log-group",
        "queue",
        "secret",
        "table",
        "topic",
    ]
    assert all(s.encryption == "named-key" for s in facts.stores)
    assert {f.name for f in facts.functions} == {"patients-read", "patients-write"}
    assert facts.log_buckets[0].lock_mode == "COMPLIANCE"
    assert facts.log_buckets[0].retention_days == aws_reference.RETENTION_DAYS
    assert {e.min_tls for e in facts.endpoints if e.protocol == "HTTPS" and e.min_tls} == {"1.2"}
    assert all(s.private for s in facts.subnets)
    stages = {e.name for e in facts.endpoints if e.kind == "api-stage"}
    assert stages == {"patients-api/prod", "patients-http/$default"}  # REST and HTTP APIs
    assert all(e.access_logging for e in facts.endpoints if e.kind == "api-stage")
    domains = {e.name: e.min_tls for e in facts.endpoints if e.kind == "api-domain"}
    assert domains == {"api.patients.example": "1.2", "http.patients.example": "1.2"}
    assert {e.service for e in facts.private_endpoints} == {"dynamodb", "s3"}


def test_the_collector_calls_exactly_the_documented_read_only_actions(endpoint):
    called: set[str] = set()

    def record(model: Any, **kwargs: Any) -> None:
        called.add(iam_action(model.service_model.service_name, model.name))

    read_estate(reader(endpoint, {"before-call.*.*": record}))
    document = json.loads(POLICY.read_text())
    (statement,) = document["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == sorted(ACTIONS)
    assert called == set(ACTIONS)  # every action used, none beyond the policy
    verbs = {a.split(":", 1)[1] for a in ACTIONS}
    assert all(v == "GET" or v.startswith(("Get", "List", "Describe")) for v in verbs), verbs


def _denied(model: Any, **kwargs: Any) -> tuple[AWSResponse, dict[str, Any]]:
    error = {"Code": "AccessDeniedException", "Message": "not allowed"}
    meta = {"HTTPStatusCode": 400}
    return AWSResponse("http://127.0.0.1/", 400, {}, None), {
        "Error": error,
        "ResponseMetadata": meta,
    }


def test_a_refused_call_leaves_its_control_inconclusive_naming_the_action(endpoint):
    hooks = {
        "before-call.kms.GetKeyRotationStatus": _denied,
        "before-call.cloudtrail.DescribeTrails": _denied,
    }
    facts = read_estate(reader(endpoint, hooks))
    (key,) = facts.keys
    assert key.rotation is None
    assert key.unread == ("denied: kms:GetKeyRotationStatus",)
    assert facts.missing("trails") == ["trails: denied: cloudtrail:DescribeTrails"]
    rotation = [o for o in judge_encryption(facts) if o.ref == "b" and "rotation" in o.probe]
    assert {o.status for o in rotation} == {Status.INCONCLUSIVE}
    assert "denied: kms:GetKeyRotationStatus" in rotation[0].observed
    (trail,) = judge_trails(facts)
    assert trail.status is Status.INCONCLUSIVE


def test_a_loopback_endpoint_gets_fake_credentials_never_the_users(monkeypatch, endpoint):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALLOOKING00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-looking")
    config = Config({"cloud": {"aws": {"endpoint_url": endpoint, "profile": "prod"}}})
    sts = Reader(AwsScope.from_config(config)).client("sts")
    assert sts._request_signer._credentials.access_key == "testing"


def test_big_accounts_are_read_concurrently_with_a_progress_line():
    lines: list[str] = []
    r = Reader(AwsScope(("us-east-1",)), progress=lines.append)
    assert r.each("tables", lambda n: n * 2, range(PROGRESS_FROM)) == [n * 2 for n in range(100)]
    assert lines[-1] == f"cloud: read {PROGRESS_FROM}/{PROGRESS_FROM} tables"
    assert r.each("tables", lambda n: n, range(3)) == [0, 1, 2]
    assert len(lines) == 2  # 50 and 100 only; small walks stay quiet


def test_policy_statements_become_grants():
    doc = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": "s3"}},
            },
            {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Action": "ec2:CreateNetworkInterface", "Resource": "*"},
        ]
    }
    root, conditioned, network = grants(json.dumps(doc))
    assert root.principals == ("account",)
    assert root.data_access
    assert conditioned.principals == ("*",)
    assert conditioned.conditional
    assert not network.data_access


def test_environment_variables_are_judged_by_name_and_shape_only():
    assert env_kind("DB_PASSWORD", "hunter2") == ENV_PLAINTEXT_CREDENTIAL
    assert env_kind("API_KEY", "arn:aws:secretsmanager:us-east-1:1:secret:x") == ENV_REFERENCE
    assert env_kind("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP") == ENV_ACCESS_KEY
    assert env_kind("TABLE_NAME", "patients") == ENV_REFERENCE
    assert env_kind("SESSION_TOKEN", "") == ENV_REFERENCE  # declared empty: nothing in clear
    assert env_kind("DB_SECRET_NAME", "patients-db") == ENV_REFERENCE  # fetched by name
    assert env_kind("TOKEN_URL", "https://idp.example/token") == ENV_REFERENCE


def test_an_aws_session_that_cannot_open_is_inconclusive_with_the_reason(monkeypatch, tmp_path):
    from harness.cloud.aws_read import collect
    from harness.outcome import CannotObserve

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    config = Config({"cloud": {"aws": {"profile": "no-such-profile"}}})
    with pytest.raises(CannotObserve, match="cannot open an AWS session: ProfileNotFound"):
        collect(config)


def test_tls_floors_from_policy_protocols():
    assert min_tls(["TLSv1.2", "TLSv1.1", "TLSv1"]) == "1.0"
    assert min_tls(["TLSv1.3", "TLSv1.2"]) == "1.2"
    assert min_tls(["TLS_1_2"]) == "1.2"
    assert min_tls(["SSLv3", "TLSv1.2"]) == "0.0"
    assert min_tls([]) is None


def test_hipaa_cloud_alone_is_a_cloud_only_run(pytester, endpoint):
    from conftest import control_statuses
    from harness.checks import registered

    pytester.makefile(
        ".toml",
        hipaa=f'[cloud.aws]\nregions = ["us-east-1"]\nendpoint_url = "{endpoint}"\n'
        "[audit]\nmin_retention_days = 2190\n",
    )
    statuses = control_statuses(pytester, "--hipaa-cloud=aws", "-n", "0")
    cloud = {c for c in registered() if c.startswith("CLOUD-")}
    assert {c: s for c, s in statuses.items() if c in cloud} == dict.fromkeys(cloud, "PASS")
    assert {s for c, s in statuses.items() if c not in cloud} == {"SKIP"}
    assert set(statuses) == set(registered())


def test_listings_are_walked_page_by_page(endpoint):
    logs = boto3.client(
        "logs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for i in range(7):
        logs.create_log_group(logGroupName=f"/paging/{i}")
    calls: list[str] = []
    r = reader(
        endpoint, {"before-call.cloudwatch-logs.DescribeLogGroups": lambda **kw: calls.append("x")}
    )
    config = {"PageSize": 2}
    found = r.pages(
        r.client("logs"),
        "DescribeLogGroups",
        "logGroups",
        logGroupNamePrefix="/paging/",
        PaginationConfig=config,
    )
    assert sorted(g["logGroupName"] for g in found) == [f"/paging/{i}" for i in range(7)]
    assert len(calls) == 4


def test_a_refused_backup_plan_leaves_only_cloud_008_b_inconclusive(endpoint):
    from harness.checks.cloud import judge_backups

    facts = read_estate(reader(endpoint, {"before-call.backup.GetBackupPlan": _denied}))
    assert facts.missing("backup-plans") == ["backup-plans: denied: backup:GetBackupPlan"]
    assert [u.group for u in facts.unread] == ["backup-plans"]
    observations = judge_backups(facts)
    assert {o.ref: o.status for o in observations} == {"a": Status.PASS, "b": Status.INCONCLUSIVE}


def test_refused_stages_and_tls_policies_leave_their_probes_inconclusive(endpoint):
    from harness.checks.cloud import judge_edge

    hooks = {
        "before-call.api-gateway.GetStages": _denied,
        "before-call.elastic-load-balancing-v2.DescribeSSLPolicies": _denied,
    }
    facts = read_estate(reader(endpoint, hooks))
    stage = next(e for e in facts.endpoints if e.name == "patients-api/*")
    assert stage.unread == ("denied: apigateway:GET",)
    observations = judge_edge(facts)
    statuses: dict[str, set[Status]] = {}
    for o in observations:
        statuses.setdefault(o.ref, set()).add(o.status)
    assert Status.INCONCLUSIVE in statuses["a"]
    assert Status.FAIL not in statuses["a"]  # a policy not read is not a weak policy
    assert Status.INCONCLUSIVE in statuses["d"]


def test_function_identities_are_roles_and_hold_no_access_keys(endpoint):
    facts = read_estate(reader(endpoint))
    assert {(r.access_keys, r.key_basis) for r in facts.roles} == {
        (0, "roles hold no long-lived keys; function identities are roles")
    }


def test_a_listing_is_cut_at_max_items_and_the_rest_is_unread(endpoint, monkeypatch):
    from harness.cloud import aws

    monkeypatch.setattr(aws, "MAX_ITEMS", 1)
    facts = read_estate(reader(endpoint))
    assert "log-groups: truncated: logs:DescribeLogGroups after 1 items" in facts.missing(
        "log-groups"
    )
    assert len(facts.functions) <= 1  # lambda:ListFunctions cut too
    assert facts.missing("functions") == [
        "functions: truncated: lambda:ListFunctions after 1 items"
    ]

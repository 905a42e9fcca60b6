"""CLOUD-001 ... CLOUD-008 judged on recorded facts: no SDK, no server.

The facts are shaped as each provider would record them: AWS (what harness/cloud/aws_read.py
fills), and the same facts as an Azure or GCP collector would state them (Key Vault keys with
a rotation policy, role assignments at subscription scope, Cloud KMS keys), so the judges hold
for any provider that fills an Estate.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.checks import registered
from harness.checks.cloud import (
    NO_CLOUD,
    judge_backups,
    judge_edge,
    judge_encryption,
    judge_identities,
    judge_log_buckets,
    judge_network,
    judge_secrets,
    judge_trails,
)
from harness.cloud.facts import (
    ENV_ACCESS_KEY,
    ENV_PLAINTEXT_CREDENTIAL,
    ENV_REFERENCE,
    BackupPlanFacts,
    BucketFacts,
    EndpointFacts,
    Estate,
    FunctionFacts,
    Grant,
    KeyFacts,
    PrivateEndpointFacts,
    RoleFacts,
    SecretFacts,
    StoreFacts,
    SubnetFacts,
    TrailFacts,
    Unread,
)
from harness.outcome import Status
from tests.checks.recorded import refs, settled

P, F, INC = Status.PASS, Status.FAIL, Status.INCONCLUSIVE
KEY = "arn:aws:kms:us-east-1:123456789012:key/k1"
ROLE = "arn:aws:iam::123456789012:role/patients-read-fn"
ROLE_KEYS = "roles hold no long-lived keys; function identities are roles"
NARROW = Grant(("kms:Decrypt",), ("*",), (ROLE,), data_access=True)

#: What aws_read records for the compliant aws-reference estate (trimmed to one function).
AWS = Estate(
    provider="aws",
    account="123456789012",
    scope="aws regions us-east-1, PHI tagged phi=true",
    keys=(KeyFacts(KEY, True, True, True, (NARROW,)),),
    stores=(
        StoreFacts("table", "patients", "named-key", KEY, True),
        StoreFacts("bucket", "patients-documents", "named-key", KEY),
        StoreFacts("log-group", "/aws/lambda/patients-read", "named-key", KEY),
    ),
    log_buckets=(BucketFacts("patients-audit-logs", "COMPLIANCE", 2190, True, True),),
    trails=(TrailFacts("organization-trail", True, True, True, "patients-audit-logs"),),
    functions=(
        FunctionFacts(
            "patients-read",
            ROLE,
            (("DB_SECRET_ARN", ENV_REFERENCE), ("TABLE_NAME", ENV_REFERENCE)),
            ("subnet-a",),
            "AWS_IAM",
        ),
    ),
    roles=(
        RoleFacts(
            ROLE,
            (
                Grant(
                    ("dynamodb:GetItem",), ("arn:aws:dynamodb:::table/patients",), data_access=True
                ),
                Grant(("ec2:CreateNetworkInterface",), ("*",)),
            ),
            0,
            key_basis=ROLE_KEYS,
        ),
    ),
    secrets=(SecretFacts("patients-db", True),),
    endpoints=(
        EndpointFacts("load-balancer-listener", "edge:443", "HTTPS", "1.2", False, True),
        EndpointFacts("load-balancer-listener", "edge:80", "HTTP", None, True, True),
        EndpointFacts("api-domain", "api.example", "HTTPS", "1.2"),
        EndpointFacts("api-stage", "api/prod", "HTTPS", None, False, True),
    ),
    subnets=(SubnetFacts("subnet-a", True, network="vpc-1"),),
    private_endpoints=(
        PrivateEndpointFacts("vpc-1", "dynamodb"),
        PrivateEndpointFacts("vpc-1", "s3"),
    ),
    backup_plans=(BackupPlanFacts("phi-daily", 1),),
)

#: The same estate as an Azure collector would state it: Key Vault key, Storage with
#: customer-managed keys, an immutable container with a locked time-based policy, the
#: Activity Log export, a Function App's managed identity with RBAC grants.
AZURE = replace(
    AWS,
    provider="azure",
    account="00000000-0000-0000-0000-000000000000",
    keys=(KeyFacts("https://vault.vault.azure.net/keys/phi", True, True, True, ()),),
    stores=(
        StoreFacts(
            "storage-account", "phidata", "named-key", "https://vault.vault.azure.net/keys/phi"
        ),
    ),
    roles=(
        RoleFacts(
            "mi-patients-read",
            (Grant(("Microsoft.Storage/*/read",), ("/subscriptions/s/rg/phi",), data_access=True),),
            0,
            key_basis="managed identities hold no keys",
        ),
    ),
    functions=(FunctionFacts("patients-read", "mi-patients-read", (), ("subnet-a",), None),),
)


def by(observations):
    return refs(observations)


def test_the_compliant_aws_estate_passes_every_cloud_judge():
    for judge in (
        judge_encryption,
        judge_trails,
        judge_identities,
        judge_secrets,
        judge_edge,
        judge_network,
        judge_backups,
    ):
        statuses = {s for ss in by(judge(AWS)).values() for s in ss}
        assert statuses <= {P, Status.SKIP}, judge.__name__
    assert set(by(judge_log_buckets(AWS, 2190))) == {"a", "b", "c"}


def test_an_azure_shaped_estate_is_judged_by_the_same_checks():
    assert settled("CLOUD-001", judge_encryption(AZURE)).status is P
    assert settled("CLOUD-004", judge_identities(AZURE)).status is P
    wide = replace(
        AZURE, roles=(RoleFacts("mi-patients-read", (Grant(("*",), ("/subscriptions/s",)),)),)
    )
    assert settled("CLOUD-004", judge_identities(wide)).status is F


@pytest.mark.parametrize(
    ("change", "ref"),
    [
        ({"stores": (StoreFacts("table", "patients", "provider-key", "", True),)}, "a"),
        ({"keys": (KeyFacts(KEY, False, True, None, ()),)}, "a"),  # AWS-managed key
        ({"keys": (KeyFacts(KEY, True, True, False, (NARROW,)),)}, "b"),
        ({"keys": (KeyFacts(KEY, True, False, True, (NARROW,)),)}, "b"),
        (
            {
                "keys": (
                    KeyFacts(KEY, True, True, True, (Grant(("kms:*",), ("*",), ("account",)),)),
                )
            },
            "c",
        ),
        (
            {
                "keys": (
                    KeyFacts(KEY, True, True, True, (Grant(("kms:Decrypt",), ("*",), ("*",)),)),
                )
            },
            "c",
        ),
    ],
)
def test_cloud_001_fails_each_weak_key_or_store(change, ref):
    outcome = settled("CLOUD-001", judge_encryption(replace(AWS, **change)))
    assert outcome.status is F
    assert F in by(outcome.observations)[ref]


def test_cloud_001_a_conditioned_account_grant_passes_and_denials_are_inconclusive():
    conditioned = Grant(("kms:Decrypt",), ("*",), ("account",), conditional=True)
    ok = replace(AWS, keys=(KeyFacts(KEY, True, True, True, (conditioned,)),))
    assert settled("CLOUD-001", judge_encryption(ok)).status is P
    denied = KeyFacts(KEY, True, True, None, (), ("denied: kms:GetKeyRotationStatus",))
    outcome = settled("CLOUD-001", judge_encryption(replace(AWS, keys=(denied,))))
    assert outcome.status is INC
    assert "denied: kms:GetKeyRotationStatus" in outcome.summary


def test_cloud_001_an_undescribed_key_is_inconclusive_not_provider_managed():
    undescribed = KeyFacts(KEY, None, False, None, (), ("denied: kms:DescribeKey",))
    outcome = settled("CLOUD-001", judge_encryption(replace(AWS, keys=(undescribed,))))
    assert outcome.status is INC
    assert "denied: kms:DescribeKey" in outcome.summary


def test_cloud_001_nothing_in_scope_is_never_a_pass():
    outcome = settled("CLOUD-001", judge_encryption(replace(AWS, stores=(), keys=())))
    assert outcome.status is INC
    scoped = replace(AWS, unread=(Unread("phi-scope", "denied: tag:GetResources"),))
    assert "denied: tag:GetResources" in settled("CLOUD-001", judge_encryption(scoped)).summary


@pytest.mark.parametrize(
    ("bucket", "ref"),
    [
        (BucketFacts("b", "GOVERNANCE", 2190, True, True), "a"),
        (BucketFacts("b", "COMPLIANCE", 30, True, True), "a"),
        (BucketFacts("b", "", 0, True, True), "a"),
        (BucketFacts("b", "COMPLIANCE", 2190, False, True), "b"),
        (BucketFacts("b", "COMPLIANCE", 2190, True, False), "c"),
    ],
)
def test_cloud_002_fails_each_weak_audit_bucket(bucket, ref):
    observations = judge_log_buckets(replace(AWS, log_buckets=(bucket,)), 2190)
    assert settled("CLOUD-002", observations).status is F
    assert by(observations)[ref] == [F]


def test_cloud_002_without_a_bucket_is_inconclusive():
    assert settled("CLOUD-002", judge_log_buckets(replace(AWS, log_buckets=()), 1)).status is INC


@pytest.mark.parametrize(
    "trail",
    [
        TrailFacts("t", False, True, True, "b"),
        TrailFacts("t", True, False, True, "b"),
        TrailFacts("t", True, True, False, "b"),
    ],
)
def test_cloud_003_needs_one_trail_with_all_three(trail):
    assert settled("CLOUD-003", judge_trails(replace(AWS, trails=(trail,)))).status is F
    both = replace(AWS, trails=(trail, TrailFacts("org", True, True, True, "b")))
    assert settled("CLOUD-003", judge_trails(both)).status is P


def test_cloud_004_shared_roles_wildcards_and_access_keys_fail():
    shared = replace(
        AWS, functions=(*AWS.functions, replace(AWS.functions[0], name="patients-write"))
    )
    assert by(judge_identities(shared))["a"].count(F) == 1
    for grant in (
        Grant(("dynamodb:*",), ("arn:aws:dynamodb:::table/patients",), data_access=True),
        Grant(("dynamodb:GetItem",), ("*",), data_access=True),
        Grant(("*",), ("arn:aws:s3:::x",), data_access=True),
    ):
        wide = replace(AWS, roles=(RoleFacts(ROLE, (grant,)),))
        assert by(judge_identities(wide))["b"] == [F], grant
    keyed = replace(
        AWS, functions=(replace(AWS.functions[0], env=(("AWS_ACCESS_KEY_ID", ENV_ACCESS_KEY),)),)
    )
    assert F in by(judge_identities(keyed))["c"]


def test_cloud_004_without_phi_functions_does_not_apply():
    assert (
        settled("CLOUD-004", judge_identities(replace(AWS, functions=(), roles=()))).status
        is Status.SKIP
    )


def test_cloud_005_rotation_off_and_plaintext_credentials_fail():
    off = replace(AWS, secrets=(SecretFacts("patients-db", False),))
    assert by(judge_secrets(off))["a"] == [F]
    env = (("DB_PASSWORD", ENV_PLAINTEXT_CREDENTIAL), ("TABLE_NAME", ENV_REFERENCE))
    plain = replace(AWS, functions=(replace(AWS.functions[0], env=env),))
    observations = judge_secrets(plain)
    assert by(observations)["b"] == [F]
    assert "DB_PASSWORD" in observations[-1].observed


@pytest.mark.parametrize(
    ("endpoint", "ref"),
    [
        (EndpointFacts("load-balancer-listener", "edge:443", "HTTPS", "1.0", False, True), "a"),
        (EndpointFacts("api-domain", "api.example", "HTTPS", "1.0"), "a"),
        (EndpointFacts("load-balancer-listener", "edge:80", "HTTP", None, False, True), "b"),
        (EndpointFacts("api-stage", "api/prod", "HTTPS", None, False, False), "d"),
    ],
)
def test_cloud_006_fails_each_weak_entry_point(endpoint, ref):
    observations = judge_edge(replace(AWS, endpoints=(endpoint,)))
    assert by(observations)[ref] == [F]


def test_cloud_006_an_open_function_url_is_critical():
    open_url = replace(AWS, functions=(replace(AWS.functions[0], url_auth="NONE"),))
    outcome = settled("CLOUD-006", judge_edge(open_url))
    assert outcome.status is F
    assert outcome.severity is not None
    assert outcome.severity.value == "critical"


def test_cloud_007_public_or_no_subnet_fails():
    public = replace(AWS, subnets=(SubnetFacts("subnet-a", False),))
    assert settled("CLOUD-007", judge_network(public)).status is F
    outside = replace(AWS, functions=(replace(AWS.functions[0], subnets=()),))
    assert settled("CLOUD-007", judge_network(outside)).status is F


def test_cloud_007_declared_private_endpoints_are_held_to():
    assert judge_network(AWS) == judge_network(AWS, [])[:1]  # nothing declared: (a) alone
    assert by(judge_network(AWS, ["dynamodb", "s3"]))["b"] == [P, P]
    missing = replace(AWS, private_endpoints=(PrivateEndpointFacts("vpc-1", "s3"),))
    outcome = settled(
        "CLOUD-007", judge_network(missing, ["dynamodb", "s3"]), "cloud.aws.vpc_endpoints"
    )
    assert outcome.status is F
    assert "vpc-1 to dynamodb" in outcome.summary
    denied = replace(AWS, unread=(Unread("private-endpoints", "denied: ec2:DescribeVpcEndpoints"),))
    assert by(judge_network(denied, ["s3"]))["b"] == [INC]
    # not declared: the optional probe does not run and does not hold the control back
    assert settled("CLOUD-007", judge_network(AWS)).status is P


def test_cloud_008_pitr_off_or_no_plan_fails():
    off = replace(AWS, stores=(StoreFacts("table", "patients", "named-key", KEY, False),))
    assert by(judge_backups(off))["a"] == [F]
    assert by(judge_backups(replace(AWS, backup_plans=())))["b"] == [F]
    denied = replace(AWS, unread=(Unread("backup-plans", "denied: backup:ListBackupPlans"),))
    assert settled("CLOUD-008", judge_backups(denied)).status is INC


def test_without_a_cloud_provider_every_cloud_control_is_skip():
    from harness.checks import run_check
    from harness.cloud.session import open_cloud_run
    from harness.config import Config
    from harness.run import RunOptions

    run = open_cloud_run(None, Config(), RunOptions())  # dials nothing
    try:
        for control_id in [c for c in registered() if c.startswith("CLOUD-")]:
            outcome = run_check(control_id, run)
            assert outcome.status is Status.SKIP
            assert outcome.summary == NO_CLOUD
    finally:
        run.close()


def test_the_report_says_which_attestations_cloud_controls_automate_in_part():
    from harness.catalogue import CATALOGUE
    from harness.reporting.model import ControlResult
    from harness.reporting.results import build_results
    from tests.reporting.factory import RUN

    judged = [
        ControlResult.of(CATALOGUE["CLOUD-001"], Status.PASS, "held"),
        ControlResult.of(CATALOGUE["CLOUD-003"], Status.FAIL, "no validation"),
        ControlResult.of(CATALOGUE["CLOUD-008"], Status.SKIP, "no --hipaa-cloud"),
    ]
    results = build_results(judged, RUN, None, registered=[c.id for c in judged])
    by_id = {c.id: c for c in results.controls}
    assert by_id["ATT-002"].status is Status.ATTESTATION_MISSING  # still asked for
    assert by_id["ATT-002"].summary.endswith("; partly automated by CLOUD-001 PASS")
    assert by_id["ATT-004"].summary.endswith("; partly automated by CLOUD-003 FAIL")
    assert "partly automated" not in by_id["ATT-009"].summary  # CLOUD-008 was not judged


def test_cloud_006_a_tcp_passthrough_listener_is_not_judged_as_cleartext():
    tcp = EndpointFacts("load-balancer-listener", "nlb:443", "TCP", None, False, True)
    observations = judge_edge(replace(AWS, endpoints=(tcp,)))
    assert by(observations)["b"] == [Status.SKIP]  # not applicable: the service's TLS
    assert settled("CLOUD-006", observations).status is P


def test_cloud_002_a_setting_not_read_leaves_only_its_probe_inconclusive():
    denied = BucketFacts("b", "COMPLIANCE", 2190, None, True, ("denied: s3:GetBucketVersioning",))
    observations = judge_log_buckets(replace(AWS, log_buckets=(denied,)), 2190)
    assert by(observations) == {"a": [P], "b": [INC], "c": [P]}
    assert "denied: s3:GetBucketVersioning" in observations[1].observed


SCOPE_DENIED = (Unread("phi-scope", "denied: tag:GetResources"),)


def test_cloud_008_tables_unseen_for_want_of_scope_are_inconclusive_not_inapplicable():
    unscoped = replace(AWS, stores=(), unread=SCOPE_DENIED)
    observations = judge_backups(unscoped)
    assert by(observations)["a"] == [INC]
    assert settled("CLOUD-008", observations).status is INC


def test_cloud_005_secrets_unseen_for_want_of_scope_are_inconclusive():
    unscoped = replace(AWS, secrets=(), functions=(), unread=SCOPE_DENIED)
    observations = judge_secrets(unscoped)
    assert by(observations) == {"a": [INC], "b": [INC]}


@pytest.mark.parametrize(
    ("unread", "refs_unread"),
    [
        (SCOPE_DENIED, "abcd"),
        ((Unread("functions", "denied: lambda:ListFunctions"),), "c"),
    ],
)
def test_cloud_006_entry_points_unseen_are_inconclusive_not_inapplicable(unread, refs_unread):
    unseen = replace(AWS, endpoints=(), functions=(), unread=unread)
    observations = judge_edge(unseen)
    for r in refs_unread:
        assert by(observations)[r] == [INC], r
    assert settled("CLOUD-006", observations).status is INC


def test_cloud_006_a_policy_or_stage_not_read_is_inconclusive_on_its_probe_not_a_fail():
    why = ("denied: elasticloadbalancing:DescribeSSLPolicies",)
    https = EndpointFacts("load-balancer-listener", "edge:443", "HTTPS", None, False, True, why)
    observations = judge_edge(replace(AWS, endpoints=(https,)))
    assert by(observations)["a"] == [INC]
    assert settled("CLOUD-006", observations).status is INC
    stages = EndpointFacts("api-stage", "api/*", "HTTPS", None, False, None, ("denied: GET",))
    assert by(judge_edge(replace(AWS, endpoints=(stages,))))["d"] == [INC]
    attrs = ("denied: elasticloadbalancing:DescribeLoadBalancerAttributes",)
    unlogged = EndpointFacts(
        "load-balancer-listener", "edge:443", "HTTPS", "1.2", False, None, attrs
    )
    assert by(judge_edge(replace(AWS, endpoints=(unlogged,)))) == {
        "a": [P],
        "b": [Status.SKIP],
        "c": [P],
        "d": [INC],
    }


def test_cloud_004_access_keys_not_measured_are_inconclusive():
    unmeasured = replace(AWS, roles=(replace(AWS.roles[0], access_keys=None, key_basis=""),))
    assert by(judge_identities(unmeasured))["c"] == [INC]
    (c,) = [o for o in judge_identities(AWS) if o.ref == "c"]
    assert "roles hold no long-lived keys" in c.observed


@pytest.mark.parametrize(
    "why",
    [(), ("failed: kms:SomethingElse (Throttling)",)],
)
def test_a_fact_not_read_is_inconclusive_whatever_the_reason_says(why):
    key = KeyFacts(KEY, True, True, None, None, why)
    observations = judge_encryption(replace(AWS, keys=(key,)))
    assert by(observations)["b"] == [P, INC]
    assert by(observations)["c"] == [INC]
    bucket = BucketFacts("b", None, 0, None, None, why)
    assert by(judge_log_buckets(replace(AWS, log_buckets=(bucket,)), 1)) == {
        "a": [INC],
        "b": [INC],
        "c": [INC],
    }
    trail = TrailFacts("org", True, None, True, "b", why)
    assert by(judge_trails(replace(AWS, trails=(trail,))))["b"] == [INC]
    table = StoreFacts("table", "patients", "named-key", KEY, None, why)
    assert by(judge_backups(replace(AWS, stores=(table,))))["a"] == [INC]
    secret = SecretFacts("patients-db", None, why)
    assert by(judge_secrets(replace(AWS, secrets=(secret,))))["a"] == [INC]

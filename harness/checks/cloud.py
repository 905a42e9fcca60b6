"""CLOUD-001 ... CLOUD-008: the cloud estate around the service, judged from provider facts.

The provider (:mod:`harness.cloud`, ``--hipaa-cloud=aws``) reads the account read-only into
an :class:`~harness.cloud.facts.Estate`, once per run; each check here is a pure judge of
those facts, so Azure and GCP come in as providers without a change here. A fact the
provider could not read ("denied: kms:GetKeyRotationStatus") leaves its probe INCONCLUSIVE
naming the action; nothing found to judge is never a PASS. Without ``--hipaa-cloud`` (and
``cloud.provider`` unset) every CLOUD control is SKIP.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.catalogue import CATALOGUE, Severity
from harness.checks import check
from harness.cloud import collect
from harness.cloud.facts import (
    ENV_ACCESS_KEY,
    ENV_PLAINTEXT_CREDENTIAL,
    BucketFacts,
    EndpointFacts,
    Estate,
    FunctionFacts,
    Grant,
    KeyFacts,
    RoleFacts,
)
from harness.outcome import NotApplicable, Observation, Outcome, Probe, Status, not_applicable
from harness.run import Run

PASS, FAIL, INCONCLUSIVE = Status.PASS, Status.FAIL, Status.INCONCLUSIVE

#: Why a CLOUD control is SKIP on a run that reads no cloud account.
NO_CLOUD = (
    "no --hipaa-cloud: the cloud account is not read (pytest --hipaa-cloud=aws, scoped by "
    "[cloud.aws] in hipaa.toml)"
)


def estate(run: Run) -> Estate:
    """The run's estate, read once (``Run.memo``) by the provider ``cloud.provider`` names.

    Raises:
        NotApplicable: no provider asked for.
    """
    provider = run.config.str_("cloud.provider")
    if not provider:
        raise NotApplicable(NO_CLOUD)
    return run.memo("cloud.estate", lambda: collect(provider, run.config))


def _obs(ref: str, probe: str, observed: str, expected: str, status: Status) -> Observation:
    return Observation(probe, observed, expected, status).of(ref)


def _held(ref: str, probe: str, held: bool, observed: str, expected: str) -> Observation:
    """PASS when ``held`` (what ``expected`` asks holds), else FAIL."""
    return _obs(ref, probe, observed, expected, PASS if held else FAIL)


def _unread(ref: str, what: str, why: Iterable[str], expected: str) -> list[Observation]:
    return [_obs(ref, what, f"not read ({w})", expected, INCONCLUSIVE) for w in why]


def _not_read(
    ref: str, what: str, why: Iterable[str], expected: str, word: str = ""
) -> list[Observation]:
    """INCONCLUSIVE for a fact that is ``None``, whatever a provider's reasons say.

    The reasons naming ``word``, else all of them, else "not read": never nothing.
    """
    reasons = list(why)
    return _unread(
        ref, what, [u for u in reasons if word in u] or reasons or ["not read"], expected
    )


def _judged(control_id: str, observations: list[Observation], passed: str) -> Outcome:
    return Outcome.from_observations(CATALOGUE[control_id], observations, passed=passed)


# -- CLOUD-001: customer-managed keys ------------------------------------------------------

CLOUD_001_PROBES = (
    Probe("a", "every PHI data store encrypted with a customer-managed key"),
    Probe("b", "those keys enabled, with automatic rotation on"),
    Probe("c", "no key policy grants decryption to anyone or the whole account unconditionally"),
)


@check("CLOUD-001", probes=CLOUD_001_PROBES, needs_channel=False)
def phi_stores_encrypted_with_cmks(run: Run) -> Outcome:
    """Read every PHI data store's encryption and the keys it names; judge (a)-(c).

    The provider reads each store in scope (tables, buckets, secrets, log groups, function
    environments) and, for each key a store names, whether it is customer-managed and
    enabled, its rotation, and the policy statements that allow decryption. (a) every store
    names a customer-managed key; (b) each is enabled and rotates; (c) none grants decryption
    to anyone or to the whole account without a condition.
    """
    facts = estate(run)
    return _judged(
        "CLOUD-001",
        judge_encryption(facts),
        passed="PHI stores under customer-managed, rotated, narrowly granted keys "
        "(partly automates ATT-002: custody and key access logs are still attested)",
    )


def judge_encryption(facts: Estate) -> list[Observation]:
    """CLOUD-001 (a)-(c) on the estate's stores and keys."""
    expected = "a customer-managed key"
    out = _unread(
        "a",
        "PHI stores",
        facts.missing("phi-scope", "functions", "secrets", "log-groups"),
        expected,
    )
    if not facts.stores:
        return [*out, _obs("a", "PHI stores", "none found in scope", expected, INCONCLUSIVE)]
    keys = {k.id: k for k in facts.keys}
    used: dict[str, KeyFacts] = {}
    for s in facts.stores:
        what = f"{s.kind} {s.name}"
        if not s.encryption:
            out += _not_read("a", what, s.unread, expected)
        elif s.encryption != "named-key":
            out.append(_obs("a", what, f"encrypted with a {s.encryption}", expected, FAIL))
        elif (key := keys.get(s.key)) is None or key.customer_managed is None:
            why = key.unread if key and key.unread else [f"key {s.key} not described"]
            out += _unread("a", what, why, expected)
        elif not key.customer_managed:
            out.append(_obs("a", what, f"the provider-managed key {s.key}", expected, FAIL))
        else:
            out.append(_obs("a", what, f"customer-managed key {s.key}", expected, PASS))
            used[key.id] = key
    for key in used.values():
        out += judge_key(key)
    return out


def judge_key(key: KeyFacts) -> list[Observation]:
    """CLOUD-001 (b) and (c) for one customer-managed key."""
    what, out = f"key {key.id}", []
    out.append(
        _held("b", what, key.enabled, "enabled" if key.enabled else "not enabled", "enabled")
    )
    if key.rotation is None:
        out += _not_read("b", f"{what} rotation", key.unread, "rotation on", "Rotation")
    else:
        said = "rotation on" if key.rotation else "rotation off"
        out.append(_held("b", f"{what} rotation", key.rotation, said, "rotation on"))
    if key.decrypt_grants is None:
        return out + _not_read(
            "c", f"{what} policy", key.unread, "decryption granted to named identities", "Policy"
        )
    open_to = [g for g in key.decrypt_grants if _too_wide(g)]
    for g in open_to:
        who = ", ".join(p for p in g.principals if p in ("*", "account"))
        out.append(
            _obs(
                "c",
                f"{what} policy",
                f"decryption granted to {who} without conditions",
                "decryption granted to named identities",
                FAIL,
            )
        )
    if not open_to:
        out.append(
            _obs(
                "c",
                f"{what} policy",
                f"{len(key.decrypt_grants)} decrypt grant(s), each named or conditioned",
                "decryption granted to named identities",
                PASS,
            )
        )
    return out


def _too_wide(grant: Grant) -> bool:
    return not grant.conditional and any(p in ("*", "account") for p in grant.principals)


# -- CLOUD-002: audit log storage -----------------------------------------------------------

CLOUD_002_PROBES = (
    Probe("a", "Object Lock in COMPLIANCE mode, retention >= audit.min_retention_days"),
    Probe("b", "versioning on"),
    Probe("c", "all public access blocked"),
)


@check("CLOUD-002", probes=CLOUD_002_PROBES, needs_channel=False)
def log_bucket_write_once(run: Run) -> Outcome:
    """Read each bucket the trails deliver to (and ``cloud.aws.audit_buckets``); judge (a)-(c).

    (a) Object Lock enabled in COMPLIANCE mode with a default retention of at least
    ``audit.min_retention_days`` (GOVERNANCE can be lifted by privileged users); (b)
    versioning on; (c) all four public access blocks on. No bucket to judge is INCONCLUSIVE.
    """
    facts = estate(run)
    minimum = int(run.config.get("audit.min_retention_days") or 1)
    return _judged(
        "CLOUD-002",
        judge_log_buckets(facts, minimum),
        passed=f"audit buckets write-once for >= {minimum} days, versioned, private "
        "(partly automates ATT-004: time sources are still attested)",
    )


def judge_log_buckets(facts: Estate, minimum: int) -> list[Observation]:
    """CLOUD-002 (a)-(c) on the estate's audit buckets."""
    lock = f"COMPLIANCE mode, retention >= {minimum} days"
    if not facts.log_buckets:
        why = facts.missing("trails") or [
            "no trail delivers to a bucket and cloud.aws.audit_buckets is empty"
        ]
        return [
            _obs(r, "audit buckets", f"none to judge ({'; '.join(why)})", lock, INCONCLUSIVE)
            for r in "abc"
        ]
    out = []
    for b in facts.log_buckets:
        out += _judge_bucket(b, minimum, lock)
    return out


def _judge_bucket(b: BucketFacts, minimum: int, lock: str) -> list[Observation]:
    what, out = f"bucket {b.name}", []
    if b.lock_mode is None:
        out += _not_read("a", what, b.unread, lock, "Lock")
    else:
        held = b.lock_mode == "COMPLIANCE" and b.retention_days >= minimum
        said = f"{b.lock_mode}, {b.retention_days} days" if b.lock_mode else "no object lock"
        out.append(_held("a", what, held, said, lock))
    if b.versioning is None:
        out += _not_read("b", what, b.unread, "versioning on", "Versioning")
    else:
        said = "versioning on" if b.versioning else "versioning off"
        out.append(_held("b", what, b.versioning, said, "versioning on"))
    expected = "all four public access blocks on"
    if b.public_access_blocked is None:
        out += _not_read("c", what, b.unread, expected, "PublicAccess")
    else:
        blocked = b.public_access_blocked
        said = "public access blocked" if blocked else "public access not fully blocked"
        out.append(_held("c", what, blocked, said, expected))
    return out


# -- CLOUD-003: the management-plane trail ------------------------------------------------

CLOUD_003_PROBES = (
    Probe("a", "a multi-region trail"),
    Probe("b", "that trail is logging"),
    Probe("c", "with log-file validation on"),
)


@check("CLOUD-003", probes=CLOUD_003_PROBES, needs_channel=False)
def trail_multi_region_validated(run: Run) -> Outcome:
    """Read the account's trails and their status; judge (a)-(c).

    Some trail must be (a) multi-region, (b) logging now and (c) writing log files with
    validation (a signed digest chain), so that management-plane changes to the estate are
    recorded everywhere and cannot be altered unseen.
    """
    return _judged(
        "CLOUD-003",
        judge_trails(estate(run)),
        passed="a multi-region trail logs with log-file validation (partly automates ATT-004)",
    )


def judge_trails(facts: Estate) -> list[Observation]:
    """CLOUD-003: some trail is multi-region, logging and validated."""
    if facts.missing("trails"):
        return _unread("a", "trails", facts.missing("trails"), "a multi-region trail")
    wide = [t for t in facts.trails if t.multi_region]
    if not wide:
        return [
            _obs(
                "a",
                "trails",
                f"{len(facts.trails)} trail(s), none multi-region",
                "a multi-region trail",
                FAIL,
            )
        ]
    out = [_obs("a", f"trail {t.name}", "multi-region", "a multi-region trail", PASS) for t in wide]
    logging = [t for t in wide if t.logging]
    if not logging:
        unknown = [t for t in wide if t.logging is None]
        if unknown:
            why = [u for t in unknown for u in t.unread]
            return out + _not_read("b", "trail status", why, "logging")
        return out + [_obs("b", f"trail {t.name}", "not logging", "logging", FAIL) for t in wide]
    out += [_obs("b", f"trail {t.name}", "logging", "logging", PASS) for t in logging]
    if not any(t.validation for t in logging):
        return out + [
            _obs("c", f"trail {t.name}", "log-file validation off", "validation on", FAIL)
            for t in logging
        ]
    return out + [
        _obs("c", f"trail {t.name}", "log-file validation on", "validation on", PASS)
        for t in logging
        if t.validation
    ]


# -- CLOUD-004: least privilege per function --------------------------------------------

CLOUD_004_PROBES = (
    Probe("a", "each PHI function has its own identity"),
    Probe("b", "no wildcard action, and no wildcard resource on data actions"),
    Probe("c", "no long-lived access keys for function identities"),
)


@check("CLOUD-004", probes=CLOUD_004_PROBES, needs_channel=False)
def function_roles_least_privilege(run: Run) -> Outcome:
    """Read each PHI function's role and its policies; judge (a)-(c).

    (a) No role is shared between PHI functions; (b) no statement allows every action, and
    none allows a data action on every resource or every action of a data service; (c) the
    function identities have no long-lived access keys, and no access key ID sits in a
    function's environment (judged by its shape; the value is never kept).
    """
    return _judged(
        "CLOUD-004", judge_identities(estate(run)), passed="one narrow identity per PHI function"
    )


def judge_identities(facts: Estate) -> list[Observation]:
    """CLOUD-004 (a)-(c) on the PHI functions and their roles."""
    if facts.missing("functions", "phi-scope"):
        return _unread("a", "functions", facts.missing("functions", "phi-scope"), "functions read")
    if not facts.functions:
        return [
            not_applicable(r, "PHI functions", "no function tagged PHI in scope") for r in "abc"
        ]
    out = []
    by_role: dict[str, list[str]] = {}
    for f in facts.functions:
        by_role.setdefault(f.role, []).append(f.name)
    for role, names in sorted(by_role.items()):
        shared = len(names) > 1
        out.append(
            _held(
                "a",
                f"role {role}",
                not shared,
                f"used by {', '.join(names)}",
                "one PHI function per role",
            )
        )
    for ident in facts.roles:
        out += _unread("b", f"role {ident.id}", ident.unread, "policies read")
        wide = [g for g in ident.grants if _wildcard(g)]
        for g in wide:
            said = f"allows {', '.join(g.actions)} on {', '.join(g.resources)}"
            out.append(
                _obs("b", f"role {ident.id}", said, "named actions on named data resources", FAIL)
            )
        if not wide and not ident.unread:
            out.append(
                _obs(
                    "b",
                    f"role {ident.id}",
                    f"{len(ident.grants)} grant(s), none wildcarded on data",
                    "named actions on named data resources",
                    PASS,
                )
            )
        out += _access_keys(ident)
    for f in facts.functions:
        leaked = [n for n, kind in f.env if kind == ENV_ACCESS_KEY]
        if leaked:
            out.append(
                _obs(
                    "c",
                    f"function {f.name}",
                    f"access key ID in {', '.join(leaked)}",
                    "no long-lived access key",
                    FAIL,
                )
            )
    return out


def _access_keys(ident: RoleFacts) -> list[Observation]:
    """CLOUD-004 (c) for one identity: its long-lived keys, as the provider knows them."""
    what, keys = f"identity {ident.id}", ident.access_keys
    if keys is None:
        return _not_read("c", what, ["long-lived access keys not measured"], "none")
    said = f"{keys} access key(s)" + (f" ({ident.key_basis})" if ident.key_basis else "")
    return [_held("c", what, not keys, said, "none")]


def _wildcard(grant: Grant) -> bool:
    if "*" in grant.actions:
        return True
    if not grant.data_access:
        return False
    return "*" in grant.resources or any(a.endswith(":*") for a in grant.actions)


# -- CLOUD-005: secrets ------------------------------------------------------------------

CLOUD_005_PROBES = (
    Probe("a", "PHI secrets in the secret store rotate"),
    Probe("b", "no credential-looking plaintext environment variable in PHI functions"),
)


@check("CLOUD-005", probes=CLOUD_005_PROBES, needs_channel=False)
def secrets_managed_and_rotated(run: Run) -> Outcome:
    """Read the secret store and each PHI function's environment (names only); judge (a), (b).

    (a) Every PHI secret in the provider's secret store has rotation on; (b) no PHI function
    carries a variable whose name looks like a credential and whose value is not a reference
    to the secret store. Values are classified where they are read and never kept.
    """
    return _judged(
        "CLOUD-005", judge_secrets(estate(run)), passed="secrets stored, rotated, not in plaintext"
    )


def judge_secrets(facts: Estate) -> list[Observation]:
    """CLOUD-005 (a) and (b)."""
    out = _unread("a", "secrets", facts.missing("secrets", "phi-scope"), "rotation on")
    if not facts.secrets and not out:
        out.append(not_applicable("a", "PHI secrets", "no secret tagged PHI in scope"))
    for s in facts.secrets:
        if s.rotation is None:
            out += _not_read("a", f"secret {s.name}", s.unread, "rotation on")
        else:
            out.append(
                _held(
                    "a",
                    f"secret {s.name}",
                    s.rotation,
                    "rotation on" if s.rotation else "rotation off",
                    "rotation on",
                )
            )
    unseen = facts.missing("functions", "phi-scope")
    out += _unread("b", "functions", unseen, "environments read")
    if not facts.functions and not unseen:
        out.append(not_applicable("b", "PHI functions", "no function tagged PHI in scope"))
    for f in facts.functions:
        plain = [n for n, kind in f.env if kind == ENV_PLAINTEXT_CREDENTIAL]
        said = (
            f"plaintext credential-looking variable(s) {', '.join(plain)}"
            if plain
            else f"{len(f.env)} variable(s), none a plaintext credential"
        )
        out.append(
            _held("b", f"function {f.name}", not plain, said, "credentials from the secret store")
        )
    return out


# -- CLOUD-006: edge and transport --------------------------------------------------------

CLOUD_006_PROBES = (
    Probe("a", "TLS 1.2+ security policy on every TLS listener and API domain"),
    Probe("b", "cleartext listeners only redirect to HTTPS"),
    Probe("c", "no PHI function URL open with auth NONE"),
    Probe("d", "access logging on load balancers and API stages"),
)

_TLS_FLOOR = "1.2"


@check("CLOUD-006", probes=CLOUD_006_PROBES, needs_channel=False)
def edge_transport_policies(run: Run) -> Outcome:
    """Read listeners, API domains and stages, and function URLs; judge (a)-(d).

    (a) Every TLS listener's security policy and every API domain accepts nothing below TLS
    1.2; (b) every cleartext listener only redirects to HTTPS; (c) no PHI function URL is
    open with auth NONE (critical); (d) load balancers and API stages log their access.
    """
    return _judged(
        "CLOUD-006",
        judge_edge(estate(run)),
        passed="TLS 1.2+ edge, redirects only, no open function URL, access logged",
    )


def judge_edge(facts: Estate) -> list[Observation]:
    """CLOUD-006 (a)-(d); entry points or functions the scope could not list are unread."""
    out = []
    unseen = facts.missing("load-balancers", "apis", "phi-scope")
    for r in "abd":
        out += _unread(r, "entry points", unseen, "entry points read")
    out += _unread("c", "PHI functions", facts.missing("functions", "phi-scope"), "functions read")
    for e in facts.endpoints:
        out += _endpoint(e)
    out += _function_urls(facts.functions)
    have = {o.ref for o in out}
    out += [
        not_applicable(r, "entry points", "none of this kind in scope")
        for r in "abcd"
        if r not in have
    ]
    return out


def _endpoint(e: EndpointFacts) -> list[Observation]:
    """CLOUD-006 (a), (b), (d) for one entry point; a fact not read is INCONCLUSIVE there."""
    what, out = f"{e.kind} {e.name}", []
    if not e.protocol and e.unread:  # its listeners were not read
        out += _not_read("a", what, e.unread, "read") + _not_read("b", what, e.unread, "read")
    if e.protocol in ("HTTPS", "TLS") and e.kind != "api-stage":
        if e.min_tls is None and e.unread:
            out += _not_read("a", what, e.unread, f">= TLS {_TLS_FLOOR}", "SSLPolic")
        else:
            floor = e.min_tls or "unknown"
            held = e.min_tls is not None and e.min_tls >= _TLS_FLOOR
            out.append(
                _held("a", what, held, f"lowest TLS version {floor}", f">= TLS {_TLS_FLOOR}")
            )
    if e.protocol == "HTTP":
        said = "redirects to HTTPS" if e.redirects else "serves HTTP in cleartext"
        out.append(_held("b", what, e.redirects, said, "a redirect to HTTPS only"))
    elif e.protocol in ("TCP", "UDP", "TCP_UDP"):
        why = f"{e.protocol} passthrough: the service's own TLS is TLS-001's to judge"
        out.append(not_applicable("b", what, why))
    if e.access_logging is not None:
        said = "access logging on" if e.access_logging else "access logging off"
        out.append(_held("d", what, e.access_logging, said, "access logging on"))
    elif e.unread and e.kind != "api-domain":
        out += _not_read("d", what, e.unread, "access logging on", "Attributes")
    if e.unread and not any(o.status is INCONCLUSIVE for o in out):
        out += _unread("a", what, e.unread, "read")  # a reason no fact above accounts for
    return out


def _function_urls(functions: Iterable[FunctionFacts]) -> list[Observation]:
    out = []
    for f in functions:
        out += _unread("c", f"function {f.name} URL", f.unread, "read")
        if f.url_auth is None:
            continue
        open_ = f.url_auth == "NONE"
        o = _held(
            "c",
            f"function {f.name} URL",
            not open_,
            f"AuthType {f.url_auth}",
            "authenticated (not NONE)",
        )
        out.append(
            Observation(
                o.probe,
                o.observed,
                o.expected,
                o.status,
                Severity.CRITICAL if open_ else None,
                ref="c",
            )
        )
    return out


# -- CLOUD-007: private networking ----------------------------------------------------------

CLOUD_007_PROBES = (
    Probe("a", "PHI functions attached to private subnets only"),
    Probe(
        "b",
        "their networks reach the declared services through private endpoints",
        required=False,
        needs=("cloud.aws.vpc_endpoints",),
    ),
)


@check("CLOUD-007", probes=CLOUD_007_PROBES, needs_channel=False)
def functions_on_private_subnets(run: Run) -> Outcome:
    """Read each PHI function's subnets, their route tables and endpoints; judge (a), (b).

    (a) Every PHI function is attached to subnets, and none of them routes 0.0.0.0/0 or ::/0
    to an internet gateway (its own route table, or the network's main one when it has none;
    a NAT route is private). (b) With ``cloud.aws.vpc_endpoints``, each network a PHI function
    runs in has an available private endpoint for each service named there.
    """
    facts = estate(run)
    services = run.config.str_list(f"cloud.{facts.provider}.vpc_endpoints")
    return _judged(
        "CLOUD-007", judge_network(facts, services), passed="PHI functions on private subnets"
    )


def judge_network(facts: Estate, services: Iterable[str] = ()) -> list[Observation]:
    """CLOUD-007 (a) every subnet of every PHI function is private; (b) declared endpoints."""
    if facts.missing("functions", "phi-scope"):
        return _unread("a", "functions", facts.missing("functions", "phi-scope"), "functions read")
    if not facts.functions:
        return [not_applicable("a", "PHI functions", "no function tagged PHI in scope")]
    subnets = {s.id: s for s in facts.subnets}
    out = []
    for f in facts.functions:
        if not f.subnets:
            out.append(
                _obs(
                    "a",
                    f"function {f.name}",
                    "not attached to a private network",
                    "private subnets",
                    FAIL,
                )
            )
        for sid in f.subnets:
            s = subnets.get(sid)
            if s is None or s.unread:
                out += _unread(
                    "a", f"subnet {sid}", s.unread if s else ["not described"], "private"
                )
            else:
                said = "no route to the internet" if s.private else "routed to an internet gateway"
                out.append(
                    _held("a", f"function {f.name} subnet {sid}", s.private, said, "private")
                )
    return out + judge_endpoints(facts, list(services))


def judge_endpoints(facts: Estate, services: list[str]) -> list[Observation]:
    """CLOUD-007 (b): a private endpoint for each declared service in each PHI network."""
    if not services:
        return []
    if facts.missing("private-endpoints"):
        return _unread("b", "private endpoints", facts.missing("private-endpoints"), "read")
    networks = sorted({s.network for s in facts.subnets if s.network})
    have = {(e.network, e.service) for e in facts.private_endpoints}
    out = []
    for network in networks:
        for service in services:
            held = (network, service) in have
            said = "private endpoint" if held else "no private endpoint"
            out.append(
                _held("b", f"network {network} to {service}", held, said, "a private endpoint")
            )
    return out


# -- CLOUD-008: backups ----------------------------------------------------------------------

CLOUD_008_PROBES = (
    Probe("a", "point-in-time recovery on PHI tables"),
    Probe("b", "a backup plan with a scheduled rule"),
)


@check("CLOUD-008", probes=CLOUD_008_PROBES, needs_channel=False)
def phi_stores_recoverable(run: Run) -> Outcome:
    """Read PITR on PHI tables and the backup plans; judge (a), (b).

    (a) Point-in-time recovery is on for every PHI table; (b) some backup plan has a scheduled
    rule. Which stores a plan selects, and restore tests, stay with ATT-009: the selection
    API is not read yet.
    """
    return _judged(
        "CLOUD-008",
        judge_backups(estate(run)),
        passed="PHI tables recoverable to a point in time, a backup plan scheduled (partly "
        "automates ATT-009: which stores it covers and restore tests are still attested)",
    )


def judge_backups(facts: Estate) -> list[Observation]:
    """CLOUD-008 (a) and (b)."""
    out = []
    tables = [s for s in facts.stores if s.kind == "table"]
    if facts.missing("phi-scope", "tables"):
        out += _unread("a", "PHI tables", facts.missing("phi-scope", "tables"), "PITR on")
    elif not tables:
        out.append(not_applicable("a", "PHI tables", "no table tagged PHI in scope"))
    for t in tables:
        if t.point_in_time_recovery is None:
            out += _not_read("a", f"table {t.name}", t.unread, "PITR on")
        else:
            on = t.point_in_time_recovery
            out.append(
                _held("a", f"table {t.name}", on, "PITR on" if on else "PITR off", "PITR on")
            )
    if facts.missing("backup-plans"):
        return out + _unread("b", "backup plans", facts.missing("backup-plans"), "a scheduled plan")
    scheduled = [p for p in facts.backup_plans if p.rules]
    said = (
        ", ".join(f"{p.name} ({p.rules} rule(s))" for p in scheduled)
        or "no backup plan with a rule"
    )
    out.append(_held("b", "backup plans", bool(scheduled), said, "a scheduled plan"))
    return out

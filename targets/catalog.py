"""Which bundled targets exist and which named defects each one can switch on.

This module is imported by the harness to validate ``spawn:`` specs, so it stays free of
heavy imports. Each defect lists the control IDs it must make FAIL: the detection matrix in
``tests/`` holds every defect to exactly that list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defect:
    """A deliberate break of one control family.

    Attributes:
        name: What goes after ``+`` in a ``spawn:`` spec.
        summary: What the defect does to the service, in Markdown (the README's defect
            tables are generated from it: ``python -m harness.generate``).
        trips: Control IDs that must FAIL when it is on (and no others).
        blinds: Control IDs the defect leaves the harness unable to judge (INCONCLUSIVE),
            each for a reason given in the summary.
        unsteady: Control IDs judged on some runs and not on others (a third-party tool's
            reach, or evidence the defect destroys at a moment the run does not choose):
            PASS, or SKIP/INCONCLUSIVE when nothing could be measured; never FAIL. Each for
            a reason given in the summary.
        fuzz_budget_s: White-box fuzzing time the defect needs to be found, when more than
            the default (the detection matrix passes it as ``--hipaa-fuzz-budget``).
        edge: A transport defect: the service is served through the TLS edge proxy of
            ``targets/edge.py``, configured with this defect.
    """

    name: str
    summary: str
    trips: tuple[str, ...]
    blinds: tuple[str, ...] = ()
    unsteady: tuple[str, ...] = ()
    fuzz_budget_s: float | None = None
    edge: bool = False


#: Defects that serve the target through Debian's nginx (``targets/nginx.py``).
NGINX_DEFECTS = frozenset({"nginx-edge", "nginx-early-data"})


@dataclass(frozen=True)
class BundledTarget:
    """A service the harness can start by itself with ``--hipaa-target=spawn:NAME``."""

    name: str
    summary: str
    defects: tuple[Defect, ...]
    #: The cloud provider a cloud estate is read through (``--hipaa-cloud``); ``None`` for a
    #: gRPC service.
    cloud: str | None = None

    def defect(self, name: str) -> Defect:
        """The defect called ``name``; raises KeyError if there is none."""
        for d in self.defects:
            if d.name == name:
                return d
        raise KeyError(name)


#: Controls that judge a TLS endpoint: not applicable when the port is cleartext.
TLS_ONLY = (
    *(f"TLS-00{i}" for i in range(2, 7)),
    "CERT-001",
    "CERT-002",
    "CERT-003",
    "MTLS-001",
    "MTLS-002",
)

REFERENCE = BundledTarget(
    name="reference",
    summary=(
        "PatientRecords, a compliant ePHI service: mTLS, JWT bearer auth, per-method RBAC, "
        "hash-chained audit log, redacted logs, sanitized errors, reflection off"
    ),
    defects=(
        Defect(
            "reflection",
            "server reflection v1 and v1alpha registered and open to every caller",
            ("REFL-001",),
        ),
        Defect(
            "plaintext",
            "the main port serves cleartext HTTP/2 (h2c) instead of TLS (the other TLS, CERT and "
            "MTLS controls then SKIP: nothing to judge)",
            ("TLS-001",),
            blinds=TLS_ONLY,
        ),
        Defect(
            "channelz",
            "channelz admin service registered on the public port without authentication",
            ("REFL-002",),
        ),
        Defect(
            "no-auth",
            "calls without credentials skip authentication and authorization (fail-open "
            "interceptor): white-box fuzzing reaches a handler without credentials (FUZZ-002), "
            "and a cross-site `text/plain` request is served (FUZZ-003)",
            ("AUTHN-001", "FUZZ-002", "FUZZ-003"),
        ),
        Defect(
            "wrong-code",
            "missing or malformed credentials get PERMISSION_DENIED instead of UNAUTHENTICATED",
            ("AUTHN-001",),
        ),
        Defect(
            "alg-none", "tokens with `alg: none` (any case) are accepted unsigned", ("AUTHN-002",)
        ),
        Defect(
            "sig-cache",
            "signatures verified once are cached by signature alone, so changed claims pass "
            "(tampered claims, and mutated tokens that keep the signature)",
            ("AUTHN-001", "AUTHN-003"),
        ),
        Defect(
            "jwk-header", "a key embedded in the token's `jwk` header is trusted", ("AUTHN-004",)
        ),
        Defect("expired-ok", "`exp` is not enforced: expired tokens are accepted", ("AUTHN-005",)),
        Defect(
            "cache-outlives-exp",
            "a token verified once stays accepted from the verification cache after it expires "
            "(fresh expired tokens are still refused)",
            ("AUTHN-005",),
        ),
        Defect(
            "aud-ignored",
            "the audience is not checked: tokens for any resource pass",
            ("AUTHN-006",),
        ),
        Defect(
            "typ-ignored",
            "the token type is not checked: ID, refresh and other JWTs pass as access tokens",
            ("AUTHN-007",),
        ),
        Defect(
            "no-step-up",
            "the privileged method accepts tokens without MFA evidence (`amr`)",
            ("AUTHN-008",),
        ),
        Defect(
            "stream-outlives-token",
            "WatchPatient checks the credential only when the stream opens",
            ("AUTHN-009",),
        ),
        Defect(
            "reduced-config",
            "not a defect of the service: its operators give the harness no issuer key, JWKS "
            "or token fixtures and no audit or log source, and their principals hold opaque "
            "bearer tokens (random strings the service looks up, as an introspection endpoint "
            "would answer), as with a real IdP and a log pipeline the harness cannot read; "
            "every control whose required probes need them must say so (SKIP or "
            "INCONCLUSIVE), never PASS, and the probes that need no JWT still run",
            (),
            blinds=(
                # Variants made from a JWT's header and claims (opaque tokens have none):
                # AUTHN-002 and AUTHN-004 entirely, AUTHN-003 (a) and (d) ((b) and (c) run
                # on the opaque token), ERR-002's comparison of JWT failure variants.
                "AUTHN-002",
                "AUTHN-003",
                "AUTHN-004",
                "ERR-002",
                # Minted tokens need the issuer's key and a JWT; fixtures are not given; an
                # opaque token's exp cannot be read (AUTHN-005 (a), AUTHN-009).
                "AUTHN-005",
                "AUTHN-006",
                "AUTHN-007",
                "AUTHN-008",
                "AUTHN-009",
                "AUTHZ-005",
                # No JWKS to judge.
                "KEY-001",
                # nothing to read events, alerts or logs from
                "AUDIT-001",
                "AUDIT-002",
                "AUDIT-003",
                "AUDIT-004",
                "AUDIT-005",
                "AUDIT-006",
                "REDACT-001",
                "REDACT-002",
                "REDACT-004",
                # Steps 1-2 run on the opaque token (the rate limit is per identity, opaque
                # callers included) and step 3 sends it altered, but the service answers
                # that burst with an alert, not throttling: no audit source shows it.
                "LIMIT-002",
            ),
        ),
        Defect(
            "stream-jitter",
            "not a defect: the first stream to outlive its token sends one more message half "
            "a second late, as a loaded host can make an honest server do; later streams end "
            "on time",
            (),
        ),
        Defect(
            "nginx-edge",
            "not a defect: served through Debian's nginx (`targets/nginx.py`), configured as "
            "its operators would: TLS terminated with the service's certificate and "
            "`ssl_verify_client on`, re-encrypted to the service with the harness's client "
            "identity (`grpc_pass grpcs://`), `client_max_body_size` above the service's "
            "limit, a per-identity `limit_req` at twice its rate, header fields up to 16 KiB. "
            "nginx answers some requests itself, without `grpc-status`: a duplicate "
            "`authorization` header and a missing client certificate (HTTP 400), a body over "
            "its limit (413), a rate over its limit (429), a larger header field (GOAWAY "
            "ENHANCE_YOUR_CALM). Every control is judged on what reached the service: "
            "nginx's answers are never taken for the service's",
            (),
        ),
        Defect(
            "nginx-early-data",
            "served through nginx as with `+nginx-edge`, with `ssl_early_data on`: a resumed "
            "TLS 1.3 session may carry 0-RTT data, which an attacker can replay",
            ("TLS-006",),
        ),
        Defect(
            "rbac-hole",
            "SearchPatients lets every authenticated caller in, whatever its roles",
            ("AUTHZ-001",),
        ),
        Defect(
            "idor",
            "clinicians can read, search, watch and stream every patient, not only their "
            "care team's (so break-glass tokens reach beyond emergency reads too)",
            ("AUTHZ-002", "AUTHZ-004", "AUTHZ-005"),
        ),
        Defect(
            "mass-assignment",
            "callers may set `managing_clinician`, which the service owns",
            ("AUTHZ-003",),
        ),
        Defect(
            "write-before-check",
            "a refused UpdatePatient is applied before the refusal",
            ("AUTHZ-003",),
        ),
        Defect(
            "stream-authz-once",
            "ReadPatients authorizes only the first message of the stream",
            ("AUTHZ-004",),
        ),
        Defect(
            "silent-break-glass",
            "break-glass reads are allowed but not flagged in the audit log",
            ("AUTHZ-005",),
        ),
        Defect(
            "no-audit-on-deny",
            "refused calls leave no audit event (a denied access is an auditable event)",
            ("AUDIT-001", "AUDIT-003"),
        ),
        Defect(
            "audit-missing-fields",
            "audit events lack the source and the resource",
            ("AUDIT-002",),
        ),
        Defect(
            "forged-actor",
            "events for refused tokens name the token's unverified `sub` as the actor",
            ("AUDIT-003",),
        ),
        Defect(
            "no-alert",
            "bursts of failed authentication raise no alert (nor are they throttled)",
            ("AUDIT-003", "LIMIT-002"),
        ),
        Defect("clock-skew", "audit timestamps run five minutes fast", ("AUDIT-004",)),
        Defect("broken-chain", "every seventh audit record's hash skips the chain", ("AUDIT-005",)),
        Defect(
            "log-rewrite",
            "the audit log is truncated and rewritten (with a fresh chain) as it grows, "
            "losing events and alerts; REDACT-002 then has no canary call's event to search, "
            "and AUDIT-004 has its timed calls' events on the runs where the rewrite spared "
            "them (PASS) and none on the others (INCONCLUSIVE)",
            ("AUDIT-001", "AUDIT-003", "AUDIT-005", "AUDIT-006", "LIMIT-002"),
            blinds=("REDACT-002",),
            unsteady=("AUDIT-004",),
        ),
        Defect(
            "audit-mutable",
            "the audit store's management API (`AuditAdmin`: `UpdateEvent`, `DeleteEvent`) "
            "lets admins edit and delete records, and its operators grant that in the RBAC "
            "matrix (so AUTHZ-001 holds); the store renumbers and re-seals its hash chain "
            "after each change, so the chain still verifies with no gap (AUDIT-005 holds): "
            "only AUDIT-006 (a), which wants every principal refused and every event kept, "
            "sees it",
            ("AUDIT-006",),
        ),
        Defect(
            "phi-in-logs",
            "update requests, values and all, go to the application log",
            ("REDACT-001",),
        ),
        Defect("phi-in-audit", "audit events carry patient names, SSN and email", ("REDACT-002",)),
        Defect(
            "phi-in-error",
            "an invalid birth date is echoed, with the patient's name, in the status message",
            ("REDACT-003",),
        ),
        Defect(
            "phi-in-trailers",
            "update responses carry the patient's name in a trailer",
            ("REDACT-003",),
        ),
        Defect(
            "token-in-logs",
            "failed authentications log the presented authorization header "
            "(the canary JWT among them)",
            ("REDACT-001", "REDACT-004"),
        ),
        Defect(
            "no-size-limit",
            "the receive limit is 256 MiB, so oversized and decompression-bomb requests get in",
            ("LIMIT-001",),
        ),
        Defect(
            "crash-enum",
            "an undeclared SortOrder number raises, unhandled (UNKNOWN)",
            ("FUZZ-001", "FUZZ-002", "ERR-002"),
        ),
        Defect(
            "crash-nested",
            "filters nested past 8 levels raise, unhandled (UNKNOWN)",
            ("FUZZ-001", "FUZZ-002", "ERR-002"),
        ),
        Defect("hang-input", "a negative `page_size` blocks for 1.5 s", ("FUZZ-001",)),
        Defect(
            "tarpit",
            "calls without credentials sleep 5 ms in grpcio's dispatch thread, where "
            "interceptors run as HEADERS arrive: 500 rapid resets stall the service's methods "
            "for 2.5 s (health, dispatched apart, stays fast)",
            ("FUZZ-003",),
        ),
        Defect(
            "deep-bug",
            "SearchPatients raises, unhandled, for one combination of two fields (page size "
            "7919 with sort by name): random generation practically never gets there; "
            "coverage-guided white-box Atheris finds it in 3 to 45 s alone, and past 60 s "
            "on a loaded 2-core host",
            ("FUZZ-002",),
            # It stops at the first finding: the budget costs only as much as the search takes.
            fuzz_budget_s=150,
        ),
        Defect("mask-ignored", "GetPatient ignores `read_mask`", ("MIN-001",)),
        Defect(
            "overshare",
            "billing also sees clinical notes and birth dates (with `*` or empty masks too)",
            ("MIN-001", "MIN-002"),
        ),
        Defect("raw-ssn", "SSNs go out in clear to every role", ("MIN-003",)),
        Defect("stale-cache", "the read cache is neither invalidated nor expired", ("MIN-004",)),
        Defect("no-rate-limit", "no per-identity rate limit", ("LIMIT-002",)),
        Defect(
            "unbounded-export",
            "exports return every record and run without a concurrency limit",
            ("LIMIT-003",),
        ),
        Defect(
            "page-size-uncapped", "SearchPatients serves any page size asked for", ("LIMIT-003",)
        ),
        Defect(
            "jwks-private",
            "the issuer's published JWKS carries the signing key's private scalar `d`",
            ("KEY-001",),
        ),
        Defect(
            "unbounded-streams",
            "the server advertises no HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (grpcio's "
            "default): one connection may open streams without limit",
            ("LIMIT-003",),
        ),
        Defect(
            "verbose-errors",
            "status messages carry stack traces with file paths",
            ("ERR-001",),
        ),
        Defect(
            "auth-oracle",
            "authentication failures say why (expired, bad signature, unknown key...)",
            ("ERR-002",),
        ),
        # Transport defects: the service sits behind the TLS edge of targets/edge.py.
        Defect(
            "edge",
            "served through a Python-ssl TLS edge proxy, configured as strictly as the service",
            (),
            edge=True,
        ),
        Defect(
            "tls10",
            "the edge accepts TLS 1.0 and 1.1; TLS 1.0 has only CBC suites and OpenSSL cannot "
            "restrict a suite to one version, so TLS 1.2 accepts that CBC suite too",
            ("TLS-001", "TLS-003"),
            edge=True,
        ),
        Defect("cbc", "the edge accepts an ECDHE CBC suite under TLS 1.2", ("TLS-003",), edge=True),
        Defect(
            "no-pfs",
            "the edge (RSA certificate) accepts static RSA key exchange under TLS 1.2; "
            "sslyze's ROBOT probe does not always complete against a server that requires "
            "client certificates (sslyze issue 484), so TLS-006 is PASS when it did and "
            "INCONCLUSIVE when it did not",
            ("TLS-004",),
            unsteady=("TLS-006",),
            edge=True,
        ),
        Defect("no-tls13", "the edge stops at TLS 1.2", ("TLS-002",), edge=True),
        Defect("no-alpn", "the edge does not negotiate ALPN", ("TLS-005",), edge=True),
        Defect(
            "expired-cert", "the edge's certificate expired ten days ago", ("CERT-003",), edge=True
        ),
        Defect(
            "wrong-san",
            "the edge's certificate names another host (wrong-host.hipaa.test)",
            ("CERT-002",),
            edge=True,
        ),
        Defect(
            "long-lived-cert",
            "the edge's certificate is valid for 825 days",
            ("CERT-003",),
            edge=True,
        ),
        Defect(
            "weak-key", "the edge's certificate has an RSA 1024-bit key", ("CERT-001",), edge=True
        ),
        Defect(
            "sha1-cert",
            "the edge's certificate is signed with SHA-1 (made by the OS `openssl` command: "
            "`cryptography` refuses to)",
            ("CERT-001",),
            edge=True,
        ),
        Defect(
            "client-cert-optional",
            "the edge asks for a client certificate but lets callers in without one",
            ("MTLS-001",),
            edge=True,
        ),
        Defect(
            "no-client-auth",
            "the edge never asks for a client certificate, so a forged one is never checked "
            "and the calls it carries succeed",
            ("MTLS-001", "MTLS-002"),
            edge=True,
        ),
        Defect(
            "client-cert-expiry-unchecked",
            "the edge does not check client certificate validity dates",
            ("MTLS-002",),
            edge=True,
        ),
        Defect(
            "client-renegotiation",
            "the edge accepts client-initiated TLS 1.2 renegotiation (a CPU-exhaustion lever)",
            ("TLS-006",),
            edge=True,
        ),
    ),
)

BUNDLED: dict[str, BundledTarget] = {REFERENCE.name: REFERENCE}

REFERENCE_NODE = BundledTarget(
    name="reference-node",
    summary=(
        "LabOrders on Node (@grpc/grpc-js), a compliant ePHI service built apart from the "
        "Python one: mTLS, RS256 bearer tokens from its own issuer verified against the "
        "issuer's JWKS (jose), per-method scopes with step-up by `acr`, integer IDs, wrapped "
        "responses, FHIR AuditEvent records hash-chained in the record (RFC 8785) with no "
        "request-ID echo, pino logs, its own error texts and validation order"
    ),
    defects=(
        Defect(
            "nginx-edge",
            "not a defect: served through Debian's nginx (`targets/nginx.py`) as in front of "
            "the Python reference: TLS terminated with the service's certificate and "
            "`ssl_verify_client on`, re-encrypted to grpc-js with the harness's client "
            "identity; nginx answers some requests itself (HTTP 400/413/429 without "
            "`grpc-status`), and the harness judges each control on what reached the service",
            (),
        ),
        Defect(
            "reflection",
            "@grpc/reflection registered (v1 and v1alpha) and open to every caller, as "
            "grpcurl-friendly Node services often ship",
            ("REFL-001",),
        ),
        Defect(
            "plaintext",
            "`ServerCredentials.createInsecure()`: cleartext HTTP/2 on the main port",
            ("TLS-001",),
            blinds=TLS_ONLY,
        ),
        Defect(
            "alg-confusion",
            "a token whose header says HS256/384/512 is verified with the issuer's RSA public "
            "key, as PEM text, for the HMAC secret (the classic RS256-to-HS256 confusion)",
            ("AUTHN-002",),
        ),
        Defect(
            "aud-ignored",
            "`jwtVerify` is called without `audience`: tokens for any resource, or none, pass",
            ("AUTHN-006",),
        ),
        Defect(
            "typ-ignored",
            "`jwtVerify` is called without `typ`: ID, refresh and other JWTs pass as access tokens",
            ("AUTHN-007",),
        ),
        Defect(
            "no-step-up",
            "UpdateLabOrder takes tokens whatever their `acr`: no step-up for the write",
            ("AUTHN-008",),
        ),
        Defect(
            "stream-outlives-token",
            "WatchResults checks the token when the stream opens, never again",
            ("AUTHN-009",),
        ),
        Defect(
            "default-allow",
            "ListLabOrders' rule is keyed under the wrong name, and a method without a rule is "
            "open to every signed-in caller (deny by default broken)",
            ("AUTHZ-001",),
        ),
        Defect(
            "idor",
            "no object-level check: physicians read, watch and update every order, not only "
            "those they placed (so break-glass tokens reach beyond emergency reads too)",
            ("AUTHZ-002", "AUTHZ-004", "AUTHZ-005"),
        ),
        Defect(
            "mask-ignored",
            "`read_mask` is validated, then dropped: every field the role may see comes back",
            ("MIN-001",),
        ),
        Defect("raw-ssn", "SSNs are returned in clear to every role", ("MIN-003",)),
        Defect(
            "stale-cache",
            "the read cache is never invalidated nor expired: updates are not served",
            ("MIN-004",),
        ),
        Defect(
            "phi-in-logs",
            "update requests, values and all, go to the pino log (`log.info({request})`)",
            ("REDACT-001",),
        ),
        Defect(
            "token-in-logs",
            "failed authentications log the call's metadata (`metadata.getMap()`), which pino's "
            "redaction paths do not cover: the presented token is written",
            ("REDACT-004",),
        ),
        Defect("no-rate-limit", "no per-subject rate limit", ("LIMIT-002",)),
        Defect(
            "no-size-limit",
            "`grpc.max_receive_message_length` raised to 256 MiB",
            ("LIMIT-001",),
        ),
        Defect(
            "verbose-errors",
            "refusals carry `err.stack` after their text (file paths and line numbers)",
            ("ERR-001",),
        ),
        Defect(
            "crash-enum",
            "ListLabOrders names the status filter for its audit query before validating it: "
            "an undeclared number has no name and throws a TypeError, which the handler hands "
            "to grpc-js as it is (`catch (err) { callback(err) }`): UNKNOWN with the exception's "
            "message. FUZZ-002's wire mutations damage the valid request, which sets no status, "
            "so only FUZZ-001's generated requests reach it",
            ("FUZZ-001", "ERR-002"),
        ),
        Defect(
            "json-stringify-chain",
            "each audit record's successor links to SHA-256 of `JSON.stringify(record)` (the "
            "line as written, keys in insertion order), not of its RFC 8785 form as the "
            'operators declare (`audit.hash_chain.canonicalization = "jcs"`)',
            ("AUDIT-005",),
        ),
        Defect(
            "audit-success-only",
            "the audit event is written in the handler's success path only: refused and "
            "failed calls leave none (a denied access is an auditable event)",
            ("AUDIT-001", "AUDIT-003"),
        ),
        Defect(
            "jwks-private",
            "the lab's issuer publishes its JWKS from jose's `exportJWK(privateKey)`: `d`, `p`, "
            "`q`, `dp`, `dq` and `qi` go out beside `n` and `e` (jose's remote key set refuses "
            "such a set, so the service is deployed with the issuer's public key as PEM)",
            ("KEY-001",),
        ),
        Defect(
            "no-client-auth",
            "`ServerCredentials.createSsl(ca, keyCertPairs, false)`: grpc-js's "
            "`checkClientCertificate` left at its default, so no client certificate is asked "
            "for, and a forged one is never checked",
            ("MTLS-001", "MTLS-002"),
        ),
        Defect(
            "client-cert-expiry-unchecked",
            "client certificates are verified by the service itself (`rejectUnauthorized: "
            "false`, then `socket.authorizationError` read on each connection), which lets "
            "`CERT_HAS_EXPIRED` through as a grace for clients late to rotate",
            ("MTLS-002",),
        ),
        Defect(
            "node-default-ciphers",
            "`GRPC_SSL_CIPHER_SUITES` left unset, so grpc-js takes Node's default cipher "
            "list, which adds CBC suites (ECDHE-ECDSA-AES128-SHA256 and others) under TLS 1.2",
            ("TLS-003",),
        ),
        Defect(
            "wrong-san",
            "the server certificate names only the service's in-cluster name "
            "(lab-orders.labs.svc.cluster.local), not the one its clients use",
            ("CERT-002",),
        ),
        Defect(
            "long-lived-cert",
            "the server certificate is valid for 825 days, an internal CA's two-year default",
            ("CERT-003",),
        ),
    ),
)

BUNDLED[REFERENCE_NODE.name] = REFERENCE_NODE

#: Targets ``spawn:`` accepts: the bundled ones (every one of them is in the detection
#: matrix and the README; a target being brought up to them would be added here alone).
SPAWNABLE: dict[str, BundledTarget] = dict(BUNDLED)

#: Controls judged from a cloud account's configuration (``--hipaa-cloud``).
CLOUD_PREFIX = "CLOUD-"


def judged_on(target: BundledTarget, control_id: str) -> bool:
    """Whether a run against ``target`` judges ``control_id``.

    A cloud estate is judged on the CLOUD controls only (a cloud-only run has no gRPC
    service: the others are SKIP); a gRPC service on all but the CLOUD controls (SKIP
    without ``--hipaa-cloud``).
    """
    return control_id.startswith(CLOUD_PREFIX) == (target.cloud is not None)


AWS_REFERENCE = BundledTarget(
    name="aws-reference",
    summary=(
        "a compliant serverless estate for PatientRecords in a local moto server on 127.0.0.1, "
        "read as AWS is (boto3 with an endpoint URL): customer-managed KMS key with rotation, "
        "COMPLIANCE-locked audit bucket, multi-region validated trail, one narrow role per "
        "function, rotated secrets, TLS 1.2+ edge, private subnets, PITR and a backup plan"
    ),
    cloud="aws",
    defects=(
        Defect("rotation-off", "the PHI key's automatic rotation is off", ("CLOUD-001",)),
        Defect(
            "governance-lock",
            "the audit bucket's Object Lock is in GOVERNANCE mode (privileged users may shorten "
            "or lift it)",
            ("CLOUD-002",),
        ),
        Defect(
            "no-log-validation",
            "the organization trail has log-file validation off",
            ("CLOUD-003",),
        ),
        Defect(
            "wildcard-policy",
            "the read function's role also allows `dynamodb:*` on `*`",
            ("CLOUD-004",),
        ),
        Defect(
            "plaintext-secret",
            "the write function carries a database password in a plaintext environment variable",
            ("CLOUD-005",),
        ),
        Defect(
            "tls10-policy",
            "the ALB's HTTPS listener uses `ELBSecurityPolicy-2016-08` (TLS 1.0 and 1.1 on)",
            ("CLOUD-006",),
        ),
        Defect(
            "public-function-url",
            "the read function has a function URL with `AuthType NONE`",
            ("CLOUD-006",),
        ),
        Defect(
            "public-subnet",
            "the write function is attached to subnets routed to an internet gateway",
            ("CLOUD-007",),
        ),
        Defect(
            "no-vpc-endpoint",
            "the functions' VPC has no DynamoDB endpoint, though the operators declare one "
            "(`cloud.aws.vpc_endpoints`): table traffic leaves the private network",
            ("CLOUD-007",),
        ),
        Defect("pitr-off", "point-in-time recovery is off on the PHI table", ("CLOUD-008",)),
    ),
)
BUNDLED[AWS_REFERENCE.name] = AWS_REFERENCE
SPAWNABLE[AWS_REFERENCE.name] = AWS_REFERENCE

"""Error hygiene (ERR-*): what error statuses tell a caller.

Both controls judge every call of the run (the journal) plus the calls of AUTHN-001 and
AUTHZ-001, which they trigger themselves if those controls have not run yet, so their
verdict does not depend on test order or ``-k`` selection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from harness.catalogue import CATALOGUE, Severity
from harness.channels import CallResult, code_text
from harness.checks import check
from harness.oracles import LEAKS
from harness.outcome import Observation, Outcome, Status
from harness.plans.calls import Call, bearer, send
from harness.plans.tokens import Base, authn_basic_calls, authz_matrix_calls, bases
from harness.policy import Policy
from harness.run import Run
from harness.tokens import harness_key, sign, with_signature

# Statuses the client library makes up itself: their text describes our side, not the server.
_CLIENT_SIDE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}

_DEBUG_INFO = "google.rpc.DebugInfo"
_SERVER_BANNER = re.compile(r"\d+\.\d+")


def _all_calls(run: Run) -> list[CallResult]:
    """Every call of the run, after making sure AUTHN-001's and AUTHZ-001's calls exist."""
    authn_basic_calls(run)
    authz_matrix_calls(run)
    from harness.plans.fuzzcases import fuzz_calls

    fuzz_calls(run)
    return run.calls()


def _texts(result: CallResult) -> Iterable[tuple[str, str]]:
    """(where, text) pairs a caller sees in a failed call: message, details, metadata."""
    yield "status message", result.details
    for key, value in (*result.initial_metadata, *result.trailing_metadata):
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                continue
            yield "status details", status.message
            for detail in status.details:
                yield (
                    f"status detail {detail.type_url.rsplit('/', 1)[-1]}",
                    detail.value.decode("utf-8", "replace"),
                )
        elif isinstance(value, str):
            yield f"metadata {key}", value


def _detail_types(result: CallResult) -> tuple[str, ...]:
    for key, value in result.trailing_metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return tuple(
                    d.type_url.rsplit("/", 1)[-1]
                    for d in status_pb2.Status.FromString(value).details
                )
            except DecodeError:
                return ("<undecodable>",)
    return ()


def _dedicated_probes(run: Run) -> list[Observation]:
    """Unknown service, unknown method, two messages to a unary method, malformed bytes."""
    policy = Policy.of(run)
    least = run.principal("least-privileged")
    unary = None
    if policy is not None:
        unary = next(
            (m for m in policy.protected() if not m.client_streaming and not m.server_streaming),
            None,
        )
    service = unary.service if unary else "grpc.health.v1.Health"
    probes = [
        Call("unknown service", "/hipaa.harness.v1.Probe/Nope", (b"",), least),
        Call(
            "unknown method on a declared service",
            f"/{service}/Nope{run.options.seed % 1000}",
            (b"",),
            least,
        ),
    ]
    if unary is not None:
        request = policy.request(run, unary.path) if policy else b""
        probes += [
            Call("two request messages to a unary method", unary.path, (request, request), least),
            Call("malformed protobuf bytes", unary.path, (b"\x0a\xff\xff\xff\xff\x0f\x12",), least),
        ]
    out = []
    for probe, result in send(run, probes):
        where = f"{probe.label} -> {probe.method}"
        if probe.label.startswith("unknown"):
            want: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNIMPLEMENTED,)
        elif probe.label.startswith("malformed"):
            want = (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAUTHENTICATED,
            )
        else:
            ok = result.code != grpc.StatusCode.UNKNOWN
            out.append(
                Observation(
                    where,
                    result.summary(),
                    "recorded; UNIMPLEMENTED preferred",
                    Status.PASS if ok else Status.WARN,
                    Severity.LOW,
                    result.request_id,
                )
            )
            continue
        expected = " or ".join(code_text(c) for c in want)
        status = Status.PASS if result.code in want and not result.responses else Status.FAIL
        out.append(
            Observation(
                where, result.summary(), expected, status, Severity.MEDIUM, result.request_id
            )
        )
    return out


@check("ERR-001")
def errors_sanitised(run: Run) -> Outcome:
    """Error details sanitised.

    Four dedicated probes (unknown service and method must get UNIMPLEMENTED, malformed
    bytes INTERNAL or INVALID_ARGUMENT; two messages to a unary method is recorded, at most
    WARN), then every non-OK status of the run (AUTHN-001 and AUTHZ-001 calls included)
    has its message, decoded ``grpc-status-details-bin`` and metadata scanned for stack
    traces, SQL, absolute paths, private addresses, ``errors.internal_domains`` and
    version banners, and for a ``google.rpc.DebugInfo`` detail. A ``server`` header with a
    version is WARN (low). Statuses the client library generates (UNAVAILABLE,
    DEADLINE_EXCEEDED, CANCELLED) are not the server's words and are not scanned.
    """
    control = CATALOGUE["ERR-001"]
    observations = _dedicated_probes(run)
    allowed = set(run.config.str_list("errors.allowed_messages"))
    domains = [d.lower() for d in run.config.str_list("errors.internal_domains")]
    scanned = 0
    seen: set[tuple[str, str]] = set()
    for result in _all_calls(run):
        for key, value in result.initial_metadata:
            if (
                key == "server"
                and isinstance(value, str)
                and _SERVER_BANNER.search(value)
                and ("server", value) not in seen
            ):
                seen.add(("server", value))
                observations.append(
                    Observation(
                        f"server header on {result.method}",
                        value,
                        "no product version",
                        Status.WARN,
                        Severity.LOW,
                        result.request_id,
                    )
                )
        if result.code == grpc.StatusCode.OK or result.code in _CLIENT_SIDE:
            continue
        scanned += 1
        if _DEBUG_INFO in _detail_types(result):
            observations.append(
                Observation(
                    f"{result.method} ({result.status})",
                    "google.rpc.DebugInfo detail",
                    "no DebugInfo",
                    Status.FAIL,
                    Severity.HIGH,
                    result.request_id,
                )
            )
        for where, text in _texts(result):
            if not text or text in allowed:
                continue
            hits = [(kind, sev) for kind, pattern, sev in LEAKS if pattern.search(text)]
            hits += [("internal domain", Severity.MEDIUM) for d in domains if d in text.lower()]
            for kind, sev in hits:
                hit = (kind, f"{result.method}:{where}")
                if hit in seen:
                    continue
                seen.add(hit)
                observations.append(
                    Observation(
                        f"{where} of {result.method} ({result.status})",
                        f"{kind} in {text[:160]!r}",
                        f"generic text, no {kind}",
                        Status.FAIL,
                        sev,
                        result.request_id,
                    )
                )
    observations.append(
        Observation(f"{scanned} error statuses scanned", "scanned", "no leak", Status.PASS)
    )
    return Outcome.from_observations(
        control, observations, passed=f"{scanned} error statuses carry generic text only"
    )


def _failure_variants(run: Run, base: Base) -> list[Call]:
    """Differently-wrong tokens that a server must refuse alike."""
    t = base.token
    from jwt.utils import base64url_decode

    sig = base64url_decode(t.segments[2])
    nonce = f"{run.options.seed:08x}"
    probes = [
        ("bad signature", with_signature(t, bytes([sig[0] ^ 1]) + sig[1:])),
        (
            "unknown kid",
            sign(t.claims, harness_key("ec"), "ES256", {**t.header, "kid": f"unknown-{nonce}"}),
        ),
    ]
    keys = run.issuer_keys()
    if keys.private_key is not None:
        import time

        now = int(time.time())
        probes += [
            (
                "expired",
                keys.mint(
                    {**t.claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, t.header
                ),
            ),
            (
                "wrong aud",
                keys.mint({**t.claims, "aud": f"https://other-{nonce}.invalid"}, t.header),
            ),
        ]
    return [
        Call(label, base.method.path, (base.request,), None, bearer(token))
        for label, token in probes
    ]


@check("ERR-002")
def errors_uniform(run: Run) -> Outcome:
    """Errors mapped robustly; no user or credential enumeration.

    Over every call of the run (AUTHN-001 and AUTHZ-001 calls included), UNKNOWN and
    DATA_LOSS must never occur. Then differently-wrong tokens (bad signature, unknown
    ``kid``, and with the issuer key: expired, wrong ``aud``) go to the same method: the
    ones refused must all look identical to the caller (code, message, detail types).
    """
    control = CATALOGUE["ERR-002"]
    observations = []
    calls = _all_calls(run)
    bad = [r for r in calls if r.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)]
    for r in bad[:10]:
        observations.append(
            Observation(
                f"{r.method}",
                r.summary(),
                "never UNKNOWN (2) or DATA_LOSS (15)",
                Status.FAIL,
                Severity.MEDIUM,
                r.request_id,
            )
        )
    if not bad:
        observations.append(
            Observation(
                f"{len(calls)} calls of the run", "no UNKNOWN or DATA_LOSS", "none", Status.PASS
            )
        )
    found, _ = bases(run)
    accepted = [b for b in found if b.accepted]
    if accepted:
        results = send(run, _failure_variants(run, accepted[0]))
        refused = [(p, r) for p, r in results if r.code != grpc.StatusCode.OK and not r.responses]
        shapes = {(r.code, r.details, _detail_types(r)) for _, r in refused}
        described = "; ".join(f"{p.label}: {r.summary()}" for p, r in refused)
        same = len(shapes) <= 1
        observations.append(
            Observation(
                "authentication failures compared",
                described or "none refused",
                "one identical (code, message, details) for every failure",
                Status.PASS if same else Status.FAIL,
                Severity.MEDIUM,
            )
        )
    return Outcome.from_observations(
        control,
        observations,
        passed="no UNKNOWN or DATA_LOSS; authentication failures indistinguishable",
    )

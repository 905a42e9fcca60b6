"""TLS-001 ... TLS-006 judges on recorded scan and handshake facts, no server.

The facts are built by hand as sslyze and the harness's own handshakes record them; the
TLS-005 call is a recorded answer shaped as several stacks send it (grpcio, grpc-go,
grpc-js, Envoy): the judges decide by versions, suites, handshakes and status codes,
never by the reference's strings.
"""

from types import SimpleNamespace

import grpc
import pytest

from harness.catalogue import Severity
from harness.checks.tls import (
    below_tls13,
    h2c_ports,
    judge_cipher,
    judge_exchanges,
    judge_groups,
    judge_grpc_status,
    judge_h2_selected,
    judge_h2c,
    judge_hygiene,
    judge_key_sizes,
    judge_legacy_versions,
    judge_robot,
    judge_suites,
    judge_tls12,
    judge_tls13,
    judge_without_h2,
)
from harness.outcome import Observation, Status
from harness.plans.tls import Handshake
from harness.tls import LEGACY_VERSIONS, Suite, TlsFacts, profile
from harness.transport import PrefaceProbe, PrefaceReply
from tests.checks.recorded import answer, declared, refs, settled, statuses

C = grpc.StatusCode
STRICT = profile("hipaa-strict")
MODERN = profile("mozilla-modern")
INTERMEDIATE = profile("mozilla-intermediate")
HEALTH = "/grpc.health.v1.Health/Check"
SETTINGS = bytes.fromhex("000000040000000000")  # an empty SETTINGS frame header
GCM12 = Suite("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDH", 253, "X25519")
CHACHA12 = Suite("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDH", 256, "secp256r1")
AES13 = Suite("TLS_AES_128_GCM_SHA256", "ECDH", 253, "X25519")


def hygiene(**changes: object) -> dict[str, object]:
    """sslyze's hygiene results of a sound server, shaped like its result objects."""
    found: dict[str, object] = {
        "HEARTBLEED": SimpleNamespace(is_vulnerable_to_heartbleed=False),
        "OPENSSL_CCS_INJECTION": SimpleNamespace(is_vulnerable_to_ccs_injection=False),
        "ROBOT": SimpleNamespace(robot_result=SimpleNamespace(value="NOT_VULNERABLE_NO_ORACLE")),
        "TLS_COMPRESSION": SimpleNamespace(supports_compression=False),
        "SESSION_RENEGOTIATION": SimpleNamespace(
            supports_secure_renegotiation=True, is_vulnerable_to_client_renegotiation_dos=False
        ),
        "TLS_EXTENDED_MASTER_SECRET": SimpleNamespace(supports_ems_extension=True),
        "TLS_FALLBACK_SCSV": SimpleNamespace(supports_fallback_scsv=True),
        "TLS_1_3_EARLY_DATA": SimpleNamespace(supports_early_data=False),
    }
    found.update(changes)
    return found


def facts(**changes: object) -> TlsFacts:
    """The scan of a sound TLS 1.2 + 1.3 server; ``changes`` replace its fields."""
    base = TlsFacts(
        target="127.0.0.1:50051 (SNI localhost)",
        client_auth="REQUIRED",
        versions={**dict.fromkeys(LEGACY_VERSIONS, False), "TLS 1.2": True, "TLS 1.3": True},
        suites={"TLS 1.2": (GCM12, CHACHA12), "TLS 1.3": (AES13,)},
        groups=("X25519", "secp256r1"),
        hygiene=hygiene(),
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


# -- declared probes -------------------------------------------------------------------------


def test_declared_probes_follow_the_catalogue_rows():
    # TLS-001: the procedure's numbered steps; step 3 only on configured extra ports.
    assert declared("TLS-001") == [
        ("1", True, ()),
        ("2", True, ()),
        ("3", False, ("tls.extra_ports",)),
    ]
    # TLS-002 and TLS-003: one probe per version the row names.
    assert declared("TLS-002") == [("tls13", True, ()), ("tls12", True, ())]
    assert declared("TLS-003") == [("tls12", True, ()), ("tls13", True, ())]
    # TLS-004: the oracle's three conditions.
    assert declared("TLS-004") == [("exchange", True, ()), ("keys", True, ()), ("groups", True, ())]
    # TLS-005: the lettered handshakes (b) and (c) are recorded, but always made.
    assert declared("TLS-005") == [("a", True, ()), ("b", True, ()), ("c", True, ())]
    # TLS-006: one probe per bullet (Heartbleed and CCS apart: two sslyze commands).
    assert [ref for ref, _, _ in declared("TLS-006")] == [
        "heartbleed",
        "ccs",
        "robot",
        "compression",
        "renegotiation",
        "ems",
        "fallback",
        "early-data",
    ]
    assert all(required for _, required, _ in declared("TLS-006"))


# -- TLS-001 ---------------------------------------------------------------------------------


def test_h2c_ports_are_the_target_port_then_each_extra_one_once():
    assert h2c_ports(443, [8443, 443, 8443, 9000]) == [443, 8443, 9000]


@pytest.mark.parametrize(
    ("reply", "first", "status"),
    [
        (PrefaceReply.TLS_ALERT, bytes.fromhex("150301000202"), Status.PASS),  # OpenSSL, Go
        (PrefaceReply.HTTP1, b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n", Status.PASS),
        (PrefaceReply.CLOSED, b"", Status.PASS),  # grpcio, Envoy: close on cleartext
        (PrefaceReply.H2_SETTINGS, SETTINGS, Status.FAIL),  # cleartext gRPC (grpc-go h2c)
    ],
)
def test_h2c_preface_fails_only_on_a_settings_frame(reply, first, status):
    obs = judge_h2c(8080, PrefaceProbe(8080, reply, first))
    assert obs.status is status
    if status is Status.FAIL:
        assert "unencrypted" in obs.observed


def test_an_unreachable_extra_port_is_inconclusive_not_a_pass():
    obs = judge_h2c(9000, "127.0.0.1:9000 is unreachable: connection refused")
    assert obs.status is Status.INCONCLUSIVE


def test_legacy_versions_accepted_fail_and_unmeasured_ones_are_inconclusive():
    cbc = Suite("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDH", 256, "secp256r1")
    scan = facts(
        versions={"SSL 2.0": False, "SSL 3.0": None, "TLS 1.0": True, "TLS 1.1": False},
        suites={"TLS 1.0": (cbc,)},
        errors={"SSL 3.0": "CONNECTIVITY_ISSUE: reset"},
    )
    obs = judge_legacy_versions(scan)
    assert statuses(obs) == [Status.PASS, Status.INCONCLUSIVE, Status.FAIL, Status.PASS]
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" in obs[2].observed
    assert obs[1].observed == "CONNECTIVITY_ISSUE: reset"


def test_tls_001_settles_inconclusive_when_the_legacy_probe_could_not_run():
    cleartext_ok = judge_h2c(50051, PrefaceProbe(50051, PrefaceReply.CLOSED, b"")).of("2")
    skipped = Observation("sslyze legacy", "no TLS", "a TLS port", Status.SKIP).of("1")
    assert settled("TLS-001", [cleartext_ok, skipped]).status is Status.INCONCLUSIVE
    legacy = [o.of("1") for o in judge_legacy_versions(facts())]
    assert settled("TLS-001", [cleartext_ok, *legacy]).status is Status.PASS


# -- TLS-002 ---------------------------------------------------------------------------------


def test_tls13_missing_fails_and_unmeasured_is_inconclusive():
    assert judge_tls13(facts()).status is Status.PASS
    assert judge_tls13(facts(versions={"TLS 1.3": False})).status is Status.FAIL
    unmeasured = facts(versions={"TLS 1.3": None}, errors={"TLS 1.3": "timeout"})
    assert judge_tls13(unmeasured).status is Status.INCONCLUSIVE


def test_tls12_fails_only_under_a_profile_without_it():
    assert judge_tls12(facts(), STRICT).status is Status.PASS
    assert judge_tls12(facts(), MODERN).status is Status.FAIL
    assert judge_tls12(facts(versions={"TLS 1.2": False}), MODERN).status is Status.PASS
    # Allowed either way under hipaa-strict: an unmeasured TLS 1.2 changes nothing there.
    unmeasured = facts(versions={"TLS 1.2": None}, errors={"TLS 1.2": "timeout"})
    assert judge_tls12(unmeasured, STRICT).status is Status.PASS
    assert judge_tls12(unmeasured, MODERN).status is Status.INCONCLUSIVE


# -- TLS-003 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "prof", "status", "severity"),
    [
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", STRICT, Status.PASS, None),
        ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", STRICT, Status.FAIL, None),
        ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", STRICT, Status.FAIL, Severity.CRITICAL),
        ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", STRICT, Status.FAIL, Severity.CRITICAL),
        ("TLS_ECDHE_ECDSA_WITH_AES_128_CCM", STRICT, Status.FAIL, None),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
            profile("hipaa-strict", allow_ccm=True),
            Status.PASS,
            None,
        ),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", STRICT, Status.PASS, None),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            profile("hipaa-strict", fips_required=True),
            Status.FAIL,
            None,
        ),
        ("TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256", STRICT, Status.FAIL, None),
    ],
)
def test_tls12_suites_are_judged_by_their_bulk_cipher(name, prof, status, severity):
    obs = judge_cipher("TLS 1.2", name, prof)
    assert (obs.status, obs.severity) == (status, severity)


def test_tls13_suites_must_be_in_the_profile_list():
    assert judge_cipher("TLS 1.3", "TLS_AES_128_GCM_SHA256", STRICT).status is Status.PASS
    assert judge_cipher("TLS 1.3", "TLS_AES_128_CCM_SHA256", STRICT).status is Status.FAIL
    ccm = profile("hipaa-strict", allow_ccm=True)
    assert judge_cipher("TLS 1.3", "TLS_AES_128_CCM_SHA256", ccm).status is Status.PASS


def test_a_refused_version_holds_and_an_unmeasured_one_is_inconclusive():
    assert statuses(judge_suites(facts(), "TLS 1.2", STRICT)) == [Status.PASS, Status.PASS]
    no13 = facts(versions={"TLS 1.2": True, "TLS 1.3": False}, suites={"TLS 1.2": (GCM12,)})
    assert statuses(judge_suites(no13, "TLS 1.3", STRICT)) == [Status.PASS]
    errored = facts(versions={"TLS 1.3": None}, errors={"TLS 1.3": "timeout"})
    assert statuses(judge_suites(errored, "TLS 1.3", STRICT)) == [Status.INCONCLUSIVE]


# -- TLS-004 ---------------------------------------------------------------------------------


def test_static_key_exchange_fails_and_dhe_only_where_the_profile_allows_it():
    static = Suite("TLS_RSA_WITH_AES_128_GCM_SHA256")
    dhe = Suite("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DH", 2048)
    scan = facts(suites={"TLS 1.2": (GCM12, static, dhe)})
    assert statuses(judge_exchanges(scan, STRICT)) == [Status.PASS, Status.FAIL, Status.FAIL]
    allowing = profile("mozilla-intermediate-5.7")
    assert statuses(judge_exchanges(scan, allowing)) == [Status.PASS, Status.FAIL, Status.PASS]
    # The static suite has no ephemeral key to size: (exchange) fails it, (keys) skips it.
    assert [o.probe.split()[3] for o in judge_key_sizes(scan)] == [GCM12.name, dhe.name]


def test_without_tls12_the_exchange_probe_holds_on_a_measured_refusal():
    only13 = facts(versions={"TLS 1.2": False, "TLS 1.3": True}, suites={"TLS 1.3": (AES13,)})
    assert statuses(judge_exchanges(only13, MODERN)) == [Status.PASS]
    errored = facts(versions={"TLS 1.2": None}, errors={"TLS 1.2": "timeout"})
    assert statuses(judge_exchanges(errored, STRICT)) == [Status.INCONCLUSIVE]


@pytest.mark.parametrize(
    ("suite", "status"),
    [
        (Suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDH", 253, "X25519"), Status.PASS),
        (Suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDH", 224, "secp224r1"), Status.FAIL),
        (Suite("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DH", 1024), Status.FAIL),
        (Suite("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DH", 2048), Status.PASS),
    ],
)
def test_ephemeral_keys_are_held_to_256_and_2048_bits(suite, status):
    assert statuses(judge_key_sizes(facts(suites={"TLS 1.2": (suite,)}))) == [status]


def test_groups_weak_fail_and_strong_outsiders_warn_only_under_mozilla():
    scan = facts(groups=("X25519", "secp224r1", "secp521r1", "ffdhe2048", "ffdhe1024"))
    assert statuses(judge_groups(scan, INTERMEDIATE)) == [
        Status.PASS,
        Status.FAIL,
        Status.WARN,
        Status.WARN,
        Status.FAIL,
    ]
    assert statuses(judge_groups(scan, STRICT)) == [
        Status.PASS,
        Status.FAIL,
        Status.PASS,
        Status.PASS,
        Status.FAIL,
    ]
    unmeasured = facts(groups=None, errors={"ELLIPTIC_CURVES": "timeout"})
    assert statuses(judge_groups(unmeasured, STRICT)) == [Status.INCONCLUSIVE]


# -- TLS-005 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hs", "status"),
    [
        (Handshake(("h2",), "localhost", "h2"), Status.PASS),
        (Handshake(("h2",), "localhost", None), Status.FAIL),  # grpc-go < 1.67 ignores ALPN
        (Handshake(("h2",), "localhost", "http/1.1"), Status.FAIL),
        (Handshake(("h2",), "localhost", alert="NO_APPLICATION_PROTOCOL"), Status.FAIL),
        (Handshake(("h2",), "localhost", closed="Connection reset by peer"), Status.INCONCLUSIVE),
        (Handshake(("h2",), "localhost", unreached="refused"), Status.INCONCLUSIVE),
    ],
)
def test_offering_h2_must_select_h2(hs, status):
    assert judge_h2_selected(hs).status is status


@pytest.mark.parametrize(
    ("hs", "status"),
    [
        # grpc-go >= 1.67 and BoringSSL stacks refuse the handshake without h2.
        (Handshake(("http/1.1",), "localhost", alert="NO_APPLICATION_PROTOCOL"), Status.PASS),
        (Handshake((), "localhost", closed="EOF occurred in violation of protocol"), Status.PASS),
        (Handshake((), "localhost", None, reply=b""), Status.PASS),
        (Handshake(("http/1.1",), "localhost", "http/1.1", reply=b"HTTP/1.1 400 Bad"), Status.PASS),
        # HTTP/2 served although h2 was not negotiated (grpcio, Node): a low warning.
        (Handshake((), "localhost", None, reply=SETTINGS), Status.WARN),
        (Handshake((), "localhost", unreached="refused"), Status.INCONCLUSIVE),
    ],
)
def test_without_h2_the_handshake_is_recorded_and_http2_served_anyway_warns(hs, status):
    obs = judge_without_h2("(c) offering no ALPN", hs)
    assert obs.status is status
    if status is Status.WARN:
        assert obs.severity is Severity.LOW


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (answer(C.OK, b"\x08\x01", method=HEALTH), Status.PASS),
        # grpc-go without a health service; grpc-js's wording; both are gRPC statuses.
        (answer(C.UNIMPLEMENTED, details="unknown service grpc.health.v1.Health"), Status.PASS),
        (answer(C.UNIMPLEMENTED, details="The server does not implement the method"), Status.PASS),
        (answer(C.UNAUTHENTICATED, details="Jwt is missing"), Status.PASS),  # Envoy jwt_authn
        # Never reached the service: Envoy's upstream reset, a deadline.
        (
            answer(
                C.UNAVAILABLE,
                details="upstream connect error or disconnect/reset before headers. "
                "reset reason: connection termination",
            ),
            Status.INCONCLUSIVE,
        ),
        (answer(C.DEADLINE_EXCEEDED, details="Deadline Exceeded"), Status.INCONCLUSIVE),
        ("the harness's gRPC client could not open a channel", Status.INCONCLUSIVE),
    ],
)
def test_the_call_over_h2_needs_any_grpc_status(result, status):
    obs = judge_grpc_status(HEALTH, result)
    assert obs.status is status
    if not isinstance(result, str):
        assert obs.request_id == result.request_id


def test_tls_005_settles_by_its_three_handshakes_and_the_call():
    a = judge_h2_selected(Handshake(("h2",), "localhost", "h2")).of("a")
    call = judge_grpc_status(HEALTH, answer(C.UNAVAILABLE)).of("a")
    b = judge_without_h2("(b)", Handshake(("http/1.1",), "localhost", alert="x")).of("b")
    c = judge_without_h2("(c)", Handshake((), "localhost", None, reply=SETTINGS)).of("c")
    assert settled("TLS-005", [a, b, c]).status is Status.WARN
    assert settled("TLS-005", [a, call, b, c]).status is Status.INCONCLUSIVE
    assert settled("TLS-005", [a, b]).status is Status.INCONCLUSIVE  # (c) did not run


# -- TLS-006 ---------------------------------------------------------------------------------


def test_a_sound_server_passes_every_hygiene_item():
    obs = [*judge_hygiene(facts()), judge_robot(facts()).of("robot")]
    assert set(statuses(obs)) == {Status.PASS}
    assert settled("TLS-006", obs).status is Status.PASS


def test_client_initiated_renegotiation_fails_and_heartbleed_is_critical():
    renegotiation = SimpleNamespace(
        supports_secure_renegotiation=True, is_vulnerable_to_client_renegotiation_dos=True
    )
    obs = judge_hygiene(facts(hygiene=hygiene(SESSION_RENEGOTIATION=renegotiation)))
    assert refs(obs)["renegotiation"] == [Status.PASS, Status.FAIL]
    bleeding = hygiene(HEARTBLEED=SimpleNamespace(is_vulnerable_to_heartbleed=True))
    (heartbleed,) = [o for o in judge_hygiene(facts(hygiene=bleeding)) if o.ref == "heartbleed"]
    assert (heartbleed.status, heartbleed.severity) == (Status.FAIL, Severity.CRITICAL)


def test_tls13_only_servers_hold_the_items_that_exist_below_it():
    only13 = facts(versions={**dict.fromkeys(LEGACY_VERSIONS, False), "TLS 1.2": False})
    assert below_tls13(only13) is False
    without = hygiene(SESSION_RENEGOTIATION=None, TLS_FALLBACK_SCSV=None)
    by_ref = refs(judge_hygiene(facts(versions=only13.versions, hygiene=without)))
    assert by_ref["renegotiation"] == [Status.PASS, Status.PASS]
    assert by_ref["fallback"] == [Status.PASS]
    # With one version unmeasured, the items are judged from what sslyze found.
    partly = facts(versions={**only13.versions, "SSL 2.0": None}, hygiene=without)
    assert below_tls13(partly) is None
    assert refs(judge_hygiene(partly))["fallback"] == [Status.INCONCLUSIVE]


def test_early_data_accepted_fails_unmeasured_is_inconclusive_and_no_tls13_holds():
    accepted = SimpleNamespace(supports_early_data=True, how="probed over HTTP/2 with nassl")
    obs = judge_hygiene(facts(hygiene=hygiene(TLS_1_3_EARLY_DATA=accepted)))
    (early,) = [o for o in obs if o.ref == "early-data"]
    assert early.status is Status.FAIL
    assert "nassl" in early.observed
    errored = facts(
        hygiene=hygiene(TLS_1_3_EARLY_DATA=None), errors={"TLS_1_3_EARLY_DATA": "BUG: closed"}
    )
    assert refs(judge_hygiene(errored))["early-data"] == [Status.INCONCLUSIVE]
    no13 = facts(versions={**facts().versions, "TLS 1.3": False}, hygiene=errored.hygiene)
    assert refs(judge_hygiene(no13))["early-data"] == [Status.PASS]


@pytest.mark.parametrize(
    ("verdict", "status", "severity"),
    [
        ("VULNERABLE_STRONG_ORACLE", Status.FAIL, Severity.CRITICAL),
        ("VULNERABLE_WEAK_ORACLE", Status.FAIL, Severity.CRITICAL),
        ("UNKNOWN_INCONSISTENT_RESULTS", Status.WARN, Severity.LOW),
        ("NOT_VULNERABLE_RSA_NOT_SUPPORTED", Status.PASS, None),
    ],
)
def test_robot(verdict, status, severity):
    result = SimpleNamespace(robot_result=SimpleNamespace(value=verdict))
    obs = judge_robot(facts(hygiene=hygiene(ROBOT=result)))
    assert (obs.status, obs.severity) == (status, severity)


def test_robot_not_measured_behind_client_auth_is_inconclusive_with_the_reason():
    obs = judge_robot(facts(hygiene=hygiene(ROBOT=None), errors={"ROBOT": "BUG: handshake"}))
    assert obs.status is Status.INCONCLUSIVE
    assert "sslyze issue 484" in obs.observed
    assert settled("TLS-006", [obs.of("robot")]).status is Status.INCONCLUSIVE


# -- TLS-006 (ems): measured on TLS 1.2, not taken from sslyze -------------------------------

#: OpenSSL 3's SSL_OP_NO_EXTENDED_MASTER_SECRET: the server never negotiates EMS, as Go
#: before 1.21 (etcd 3.4) and other old stacks.
NO_EMS = 0x1


def _tls_server(tcp_server, tmp_path, *, ems: bool, ciphers: str = "") -> int:
    """A TLS 1.2 + 1.3 server on 127.0.0.1 (Python ssl) that handshakes and reads to EOF."""
    import ssl

    from targets.pki import CertificateAuthority

    issued = CertificateAuthority("EMS test CA").issue(("localhost",))
    issued.write(tmp_path, "server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    if not ems:
        ctx.options |= NO_EMS
    if ciphers:
        ctx.set_ciphers(ciphers)  # TLS 1.2's suites (TLS 1.3's stay OpenSSL's)

    def handle(conn) -> None:
        conn.settimeout(3)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            while tls.recv(1024):
                pass

    return tcp_server(handle)


@pytest.mark.parametrize("ems", [True, False])
def test_ems_is_measured_on_tls12_not_taken_as_sslyze_reports_it(tcp_server, tmp_path, ems):
    """sslyze answers "supported" untested whenever TLS 1.3 is on: a no-EMS server passed."""
    from harness.tls import ScanTarget, measure_ems

    port = _tls_server(tcp_server, tmp_path, ems=ems)
    found = facts()  # sslyze's untested answer: supports_ems_extension=True
    measure_ems(ScanTarget("127.0.0.1", port, "localhost", None, None, None, 3.0), found)
    measured = found.hygiene["TLS_EXTENDED_MASTER_SECRET"]
    assert measured.supports_ems_extension is ems
    (item,) = [o for o in judge_hygiene(found) if o.ref == "ems"]
    assert item.status is (Status.PASS if ems else Status.FAIL)
    assert "measured on a TLS 1.2 handshake with nassl" in item.observed


def test_ems_not_measurable_is_inconclusive_never_sslyzes_untested_answer():
    from conftest import closed_port
    from harness.tls import ScanTarget, measure_ems

    gone = ScanTarget("127.0.0.1", closed_port(), "localhost", None, None, None, 1.0)
    unreached = facts()
    measure_ems(gone, unreached)
    assert refs(judge_hygiene(unreached))["ems"] == [Status.INCONCLUSIVE]
    assert "a TLS 1.2 handshake failed" in unreached.errors["TLS_EXTENDED_MASTER_SECRET"]
    # Which versions below TLS 1.3 are on is unknown: EMS is not measured either.
    unknown = facts(versions={**facts().versions, "TLS 1.2": None})
    measure_ems(gone, unknown)
    assert unknown.hygiene["TLS_EXTENDED_MASTER_SECRET"] is None
    # TLS 1.3 only: nothing to measure, and the item holds.
    only13 = facts(versions={**dict.fromkeys(LEGACY_VERSIONS, False), "TLS 1.2": False})
    measure_ems(gone, only13)
    assert refs(judge_hygiene(only13))["ems"] == [Status.PASS]


# -- TLS-006 and TLS-004: what sslyze infers on a TLS 1.3 server, measured below it ----------


def test_the_version_below_tls13_is_the_highest_enabled_or_unknown():
    from harness.tls import below_13_version

    assert below_13_version(facts()) == "TLS 1.2"
    assert below_13_version(facts(versions={**facts().versions, "TLS 1.2": False})) is None
    assert below_13_version(facts(versions={**facts().versions, "TLS 1.2": None})) == ""
    legacy = {**facts().versions, "TLS 1.2": False, "TLS 1.1": True}
    assert below_13_version(facts(versions=legacy)) == "TLS 1.1"


class _Capped:
    """A stand-in for the sslyze view :func:`harness.tls.measure_below_13` probes through."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []

    def capped(self, version: str, ecdh: bool) -> str:
        self.asked.append((version, ecdh))
        return f"sslyze at {version}"


def test_sslyzes_inferences_on_a_tls13_server_are_replaced_by_measurements(monkeypatch):
    import harness.tls as tls

    def plugin(name: str, info: str) -> bool:
        if name != "heartbleed_plugin":
            raise ConnectionResetError("reset by peer")
        return True  # vulnerable at TLS 1.2: sslyze had said False from TLS 1.3 alone

    monkeypatch.setattr(tls, "_plugin", plugin)
    monkeypatch.setattr(tls, "_legacy_handshake", lambda info, v, scsv=False: "accepted")
    monkeypatch.setattr(
        tls, "_fallback_refused", lambda info, v, plain: tls.FallbackScsv(False, f"{v} accepted")
    )
    monkeypatch.setattr(tls, "_groups_at", lambda f, info, v: setattr(f, "groups", ("X25519",)))
    found, prober = facts(), _Capped()
    tls.measure_below_13(found, prober)  # type: ignore[arg-type]
    assert prober.asked == [("TLS 1.2", True)]
    by_ref = refs(judge_hygiene(found))
    assert by_ref["heartbleed"] == [Status.FAIL]
    assert "sslyze's probe at TLS 1.2" in found.hygiene["HEARTBLEED"].how
    assert by_ref["ccs"] == [Status.INCONCLUSIVE]  # its probe failed: never sslyze's answer
    assert "a TLS 1.2 probe failed: ConnectionResetError" in found.errors["OPENSSL_CCS_INJECTION"]
    assert by_ref["fallback"] == [Status.FAIL]
    assert found.groups == ("X25519",)


def test_without_tls13_or_below_it_sslyzes_own_answers_stand():
    import harness.tls as tls

    no13 = facts(versions={**facts().versions, "TLS 1.3": False})
    tls.measure_below_13(no13, _Capped())  # type: ignore[arg-type]
    assert no13.hygiene == hygiene()  # sslyze probed TLS 1.2 itself
    only13 = facts(versions={**dict.fromkeys(LEGACY_VERSIONS, False), "TLS 1.2": False})
    tls.measure_below_13(only13, _Capped())  # type: ignore[arg-type]
    by_ref = refs(judge_hygiene(only13))
    assert (by_ref["heartbleed"], by_ref["ccs"]) == ([Status.PASS], [Status.PASS])
    assert "no version below TLS 1.3" in judge_hygiene(only13)[2].observed
    unknown = facts(versions={**facts().versions, "TLS 1.2": None})
    tls.measure_below_13(unknown, _Capped())  # type: ignore[arg-type]
    assert refs(judge_hygiene(unknown))["heartbleed"] == [Status.INCONCLUSIVE]
    assert "unknown" in unknown.errors["TLS_FALLBACK_SCSV"]
    # sslyze's compression, renegotiation and TLS 1.3-only groups do not stand either.
    assert unknown.hygiene["TLS_COMPRESSION"] is None
    assert unknown.hygiene["SESSION_RENEGOTIATION"] is None
    assert unknown.groups is None
    assert "unknown" in unknown.errors["ELLIPTIC_CURVES"]


def test_the_scan_measures_below_tls13_what_sslyze_infers(tcp_server, tmp_path):
    """A TLS 1.2 + 1.3 server (Python ssl, OpenSSL 3): sslyze's own probes at TLS 1.2."""
    from harness.tls import ScanTarget, scan

    port = _tls_server(tcp_server, tmp_path, ems=True)
    found = scan(ScanTarget("127.0.0.1", port, "localhost", None, None, None, 3.0))
    assert found.problem == ""
    assert found.hygiene["HEARTBLEED"].how.startswith("sslyze's probe at TLS 1.2")
    assert found.hygiene["OPENSSL_CCS_INJECTION"].is_vulnerable_to_ccs_injection is False
    scsv = found.hygiene["TLS_FALLBACK_SCSV"]
    assert (scsv.supports_fallback_scsv, scsv.how) == (
        True,
        "a TLS 1.2 handshake with the SCSV: alert inappropriate_fallback",
    )
    assert found.groups is not None
    assert "secp256r1" in found.groups
    by_ref = refs(judge_hygiene(found))
    for ref in ("heartbleed", "ccs", "fallback", "ems"):
        assert by_ref[ref] == [Status.PASS], ref


def test_compression_and_renegotiation_are_unmeasured_where_sslyzes_client_cannot_reach(
    monkeypatch,
):
    """sslyze's legacy client (OpenSSL 1.0.2) refused at TLS 1.2 reads as three passes."""
    import harness.tls as tls

    found = facts()
    refused = "refused (Server interrupted the TLS handshake)"
    monkeypatch.setattr(tls, "_legacy_handshake", lambda info, v, scsv=False: refused)
    assert tls._legacy_reach(found, object()) == refused
    by_ref = refs(judge_hygiene(found))
    assert by_ref["compression"] == [Status.INCONCLUSIVE]
    assert by_ref["renegotiation"] == [Status.INCONCLUSIVE, Status.INCONCLUSIVE]
    assert "legacy OpenSSL client" in found.errors["SESSION_RENEGOTIATION"]


def test_a_chacha_only_tls12_server_is_out_of_reach_of_sslyzes_legacy_client(tcp_server, tmp_path):
    from harness.tls import ScanTarget, scan

    port = _tls_server(tcp_server, tmp_path, ems=True, ciphers="CHACHA20")
    found = scan(ScanTarget("127.0.0.1", port, "localhost", None, None, None, 3.0))
    assert found.problem == ""
    assert found.versions["TLS 1.2"] is True
    by_ref = refs(judge_hygiene(found))
    # Before: sslyze's refused handshakes read as compression off and renegotiation sound.
    assert by_ref["compression"] == [Status.INCONCLUSIVE]
    assert by_ref["renegotiation"] == [Status.INCONCLUSIVE, Status.INCONCLUSIVE]
    # OpenSSL reads the SCSV before it picks a suite: the alert comes all the same.
    assert by_ref["fallback"] == [Status.PASS]
    assert "inappropriate_fallback" in found.hygiene["TLS_FALLBACK_SCSV"].how

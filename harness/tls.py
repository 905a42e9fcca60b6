"""TLS facts about a target, gathered once per run and shared by the TLS, CERT and MTLS checks.

Most facts come from sslyze's Python API: accepted suites per protocol version, supported
groups, the certificate chain, and the vulnerability and behaviour probes. sslyze runs its
scan commands concurrently; one scan takes well under a second against a local target.

Three things are done around sslyze, not by hand:

* The client-certificate requirement is read from a connectivity probe made *without* a
  certificate. sslyze reports DISABLED whenever it scans with one, and a server that closes
  the connection without an alert (grpcio does) makes that probe fail: then, if the same
  probe succeeds with the configured certificate, the requirement is REQUIRED.
* The full scan uses the configured client certificate, so mTLS servers can be scanned.
* TLS 1.3 early data is probed with ``openssl s_client`` offering ALPN ``h2``
  (:mod:`harness.early_data`), beside the scan: sslyze's probe speaks HTTP/1.1 and offers no
  ALPN, so gRPC servers issue it no ticket (or a silent server holds it to its timeout).
* sslyze does not test the extended master secret when the server speaks TLS 1.3 (it
  answers "supported" untested): the harness measures it on a handshake at the highest
  version below TLS 1.3 that the server accepts, with nassl (:func:`measure_ems`).
* Nor, on such a server, Heartbleed and CCS injection (answered "not vulnerable" from the
  version alone), the groups a TLS 1.2 handshake accepts (tried at TLS 1.3 only), and the
  fallback SCSV (tried at TLS 1.1, which a refusal of TLS 1.1 itself answers): sslyze's own
  probes are run again at the highest version below TLS 1.3, and the fallback SCSV is sent
  on a handshake at that version, beside one without it (:func:`measure_below_13`).

Path validation (:func:`verify_path`) is OpenSSL's ``X509_verify_cert`` through nassl, the
RFC 5280 rules ``openssl verify`` and gRPC's TLS stacks apply: sslyze and ``cryptography``
validate by the CA/Browser Forum's WebPKI profile only, which refuses private chains those
clients accept (a CA without a key-usage extension, for one).
"""

from __future__ import annotations

import math
import socket
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import early_data
from harness.transport import fmt_address

#: Protocol versions as the reports name them, with sslyze's scan command for each.
VERSIONS = {
    "SSL 2.0": "SSL_2_0_CIPHER_SUITES",
    "SSL 3.0": "SSL_3_0_CIPHER_SUITES",
    "TLS 1.0": "TLS_1_0_CIPHER_SUITES",
    "TLS 1.1": "TLS_1_1_CIPHER_SUITES",
    "TLS 1.2": "TLS_1_2_CIPHER_SUITES",
    "TLS 1.3": "TLS_1_3_CIPHER_SUITES",
}
LEGACY_VERSIONS = ("SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1")
_HYGIENE_COMMANDS = (
    "HEARTBLEED",
    "OPENSSL_CCS_INJECTION",
    "ROBOT",
    "TLS_COMPRESSION",
    "SESSION_RENEGOTIATION",
    "TLS_EXTENDED_MASTER_SECRET",
    "TLS_FALLBACK_SCSV",
)
#: The early-data result's key among the hygiene results (sslyze's scan command name).
EARLY_DATA = "TLS_1_3_EARLY_DATA"
#: A whole scan that takes longer than this is abandoned and reported as an ERROR.
SCAN_LIMIT_S = 60.0


@dataclass(frozen=True)
class Suite:
    """One accepted cipher suite.

    Attributes:
        name: IANA name (``TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256``).
        key_exchange: ``ECDH`` or ``DH`` for an ephemeral exchange, ``None`` when static.
        key_size: Ephemeral key size in bits, if any.
        curve: The ECDH curve's name, if any.
    """

    name: str
    key_exchange: str | None = None
    key_size: int | None = None
    curve: str | None = None

    def describe(self) -> str:
        """``TLS_ECDHE_...`` with its ephemeral key, for evidence."""
        if self.key_exchange is None:
            return self.name
        what = self.curve or f"{self.key_size}-bit"
        return f"{self.name} ({self.key_exchange} {what})"


@dataclass
class TlsFacts:
    """What the scan found. ``problem`` non-empty means it could not scan at all.

    Attributes:
        target: ``host:port`` scanned, and the SNI used.
        problem: Why sslyze could not connect, in one line; ``""`` when it could.
        client_auth: REQUIRED, OPTIONAL, DISABLED, or UNKNOWN.
        client_auth_evidence: How ``client_auth`` was decided.
        versions: Protocol version -> supported (``None``: that scan command failed).
        suites: Protocol version -> accepted suites.
        groups: Supported key-exchange groups (``None``: not measured).
        hygiene: sslyze result objects by scan command name (``None``: failed).
        errors: Scan command name -> why it failed.
        chain_der: The certificate chain as the server sent it, leaf first.
        chain_order_valid: sslyze's view of the received chain's order.
        sslyze_trust: sslyze's path validation verdict against the configured CA, in words.
        ocsp_staple_trusted: Whether a trusted OCSP staple came with the certificate.
    """

    target: str
    problem: str = ""
    client_auth: str = "UNKNOWN"
    client_auth_evidence: str = ""
    versions: dict[str, bool | None] = field(default_factory=dict)
    suites: dict[str, tuple[Suite, ...]] = field(default_factory=dict)
    groups: tuple[str, ...] | None = None
    hygiene: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    chain_der: tuple[bytes, ...] = ()
    chain_order_valid: bool | None = None
    sslyze_trust: str = ""
    ocsp_staple_trusted: bool | None = None


@dataclass(frozen=True)
class ScanTarget:
    """Where and how to scan."""

    host: str
    port: int
    server_name: str | None
    ca_bundle: Path | None
    client_cert: Path | None
    client_key: Path | None
    timeout_s: float


def scan(target: ScanTarget) -> TlsFacts:
    """Scan ``target`` with sslyze, bounded by :data:`SCAN_LIMIT_S`."""
    box: list[TlsFacts] = []
    where = fmt_address(target.host, target.port)

    def work() -> None:
        try:
            box.append(_scan(target))
        except Exception as exc:  # sslyze and nassl raise plain exceptions on odd peers
            box.append(TlsFacts(where, problem=f"sslyze failed: {type(exc).__name__}: {exc}"))

    worker = threading.Thread(target=work, name="sslyze-scan", daemon=True)
    worker.start()
    worker.join(SCAN_LIMIT_S)
    if not box:
        return TlsFacts(where, problem=f"the sslyze scan did not finish within {SCAN_LIMIT_S:g} s")
    return box[0]


def _scan(target: ScanTarget) -> TlsFacts:
    import sslyze

    where = f"{fmt_address(target.host, target.port)} (SNI {target.server_name or target.host})"
    location = sslyze.ServerNetworkLocation(
        hostname=target.server_name or target.host, port=target.port, ip_address=target.host
    )
    creds = None
    if target.client_cert is not None and target.client_key is not None:
        creds = sslyze.ClientAuthenticationCredentials(
            certificate_chain_path=target.client_cert, key_path=target.client_key
        )
    # 1. Without a certificate: what the server requires of clients.
    requirement, no_cert_error = _client_auth_requirement(location, _network(target, None))
    # 2. The full scan, with the client certificate when there is one; 0-RTT beside it.
    with ThreadPoolExecutor(1, thread_name_prefix="early-data") as pool:
        early = pool.submit(early_data_at, target)
        result = _full_scan(target, location, _network(target, creds))
        zero_rtt = early.result()
    if result.scan_result is None or result.connectivity_result is None:
        trace = result.connectivity_error_trace
        reason = str(trace).strip().splitlines()[-1] if trace else "no reason given"
        return TlsFacts(where, problem=f"sslyze could not complete a TLS handshake: {reason}")
    if no_cert_error:
        if creds is not None:
            requirement = "REQUIRED"
            evidence = (
                "a handshake without a client certificate was refused "
                f"({no_cert_error}); with the configured certificate it succeeded"
            )
        else:
            evidence = f"a handshake without a client certificate failed: {no_cert_error}"
    else:
        evidence = f"sslyze's probe without a client certificate reports {requirement}"
    facts = _facts(where, result.scan_result, requirement, evidence)
    _versions_without_certificate(target, location, facts)
    if isinstance(zero_rtt, str):
        facts.hygiene[EARLY_DATA] = None
        facts.errors[EARLY_DATA] = zero_rtt
    else:
        facts.hygiene[EARLY_DATA] = zero_rtt
    measure_ems(target, facts)
    measure_below_13(facts, _Prober(location, _network(target, creds), result))
    return facts


def early_data_at(target: ScanTarget) -> early_data.EarlyData | str:
    """TLS-006's 0-RTT probe (:func:`harness.early_data.probe`) at ``target``.

    A probe that fails outright leaves only its own item unmeasured, never the scan.
    """
    try:
        return early_data.probe(
            target.host,
            target.port,
            server_name=target.server_name,
            client_cert=target.client_cert,
            client_key=target.client_key,
            timeout_s=target.timeout_s,
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"the 0-RTT probe failed: {type(exc).__name__}: {exc}"


def _network(target: ScanTarget, creds: Any) -> Any:
    """The network settings sslyze uses for ``target``, presenting ``creds`` (or none)."""
    import sslyze

    return sslyze.ServerNetworkConfiguration(
        tls_server_name_indication=target.server_name or target.host,
        tls_client_auth_credentials=creds,
        network_timeout=max(1, math.ceil(target.timeout_s)),
        network_max_retries=0,
    )


def _client_auth_requirement(location: Any, network: Any) -> tuple[str, str]:
    """What sslyze's connectivity probe without a certificate reports, or why it failed."""
    from sslyze.errors import ConnectionToServerFailed
    from sslyze.server_connectivity import check_connectivity_to_server

    try:
        probing = check_connectivity_to_server(location, network)
    except ConnectionToServerFailed as exc:
        return "UNKNOWN", exc.error_message
    return probing.client_auth_requirement.value, ""


def _full_scan(
    target: ScanTarget, location: Any, network: Any, only: set[str] | None = None
) -> Any:
    """The one sslyze scan of the run: versions, hygiene, certificate and curves (or ``only``)."""
    import sslyze

    names = only or {*VERSIONS.values(), *_HYGIENE_COMMANDS, "CERTIFICATE_INFO", "ELLIPTIC_CURVES"}
    commands = {sslyze.ScanCommand[name] for name in names}
    extra = sslyze.ScanCommandsExtraArguments(
        certificate_info=sslyze.CertificateInfoExtraArgument(custom_ca_file=target.ca_bundle)
        if target.ca_bundle is not None and "CERTIFICATE_INFO" in names
        else None
    )
    scanner = sslyze.Scanner(per_server_concurrent_connections_limit=5)
    scanner.queue_scans(
        [
            sslyze.ServerScanRequest(
                server_location=location,
                network_configuration=network,
                scan_commands=commands,
                scan_commands_extra_arguments=extra,
            )
        ]
    )
    return next(iter(scanner.get_results()))


def _attempt(facts: TlsFacts, scan_result: Any, name: str, key: str | None = None) -> Any:
    """The result of scan command ``name``, or ``None`` with why in ``facts.errors[key]``."""
    from sslyze import ScanCommandAttemptStatusEnum

    a = getattr(scan_result, name.lower())
    if a.status is ScanCommandAttemptStatusEnum.COMPLETED:
        return a.result
    trace = a.error_trace
    last = str(trace).strip().splitlines()[-1] if trace else ""
    reason = a.error_reason.value if a.error_reason else "error"
    facts.errors[key or name] = f"{reason}: {last}" if last else reason
    return None


def _read_version(facts: TlsFacts, scan_result: Any, version: str) -> None:
    """Whether ``version`` is supported and its accepted suites (errors keyed by version)."""
    res = _attempt(facts, scan_result, VERSIONS[version], version)
    if res is None:
        facts.versions[version] = None
        return
    facts.errors.pop(version, None)
    facts.versions[version] = bool(res.is_tls_version_supported)
    facts.suites[version] = tuple(_suite(s) for s in res.accepted_cipher_suites)


def _versions_without_certificate(target: ScanTarget, location: Any, facts: TlsFacts) -> None:
    """The version scans that failed with the client certificate, made once without one.

    sslyze's SSL 2.0 client cannot present a certificate (nassl: "invalid input, usage, or
    OpenSSL build configuration?"), and a version is accepted or refused before any
    certificate is asked for: a server that accepts it and then asks for one counts as
    accepting it (sslyze reads a certificate request so), so the retry never turns an
    accepted version into a refused one. What fails again stays unmeasured, both reasons
    kept.
    """
    failed = [v for v, got in facts.versions.items() if got is None]
    if not failed or target.client_cert is None:
        return
    before = {v: facts.errors.get(v, "error") for v in failed}
    commands = {VERSIONS[v] for v in failed}
    result = _full_scan(target, location, _network(target, None), commands)
    if result.scan_result is None:
        return
    for version in failed:
        _read_version(facts, result.scan_result, version)
        if facts.versions[version] is None:
            again = facts.errors[version]
            facts.errors[version] = f"{before[version]}; without the client certificate: {again}"


def _facts(where: str, scan_result: Any, requirement: str, evidence: str) -> TlsFacts:
    facts = TlsFacts(where, client_auth=requirement, client_auth_evidence=evidence)

    def attempt(name: str) -> Any:
        return _attempt(facts, scan_result, name)

    for version in VERSIONS:
        _read_version(facts, scan_result, version)
    curves = attempt("ELLIPTIC_CURVES")
    if curves is not None:
        facts.groups = tuple(c.name for c in curves.supported_curves or ())
    for name in _HYGIENE_COMMANDS:
        facts.hygiene[name] = attempt(name)
    info = attempt("CERTIFICATE_INFO")
    if info is not None and info.certificate_deployments:
        _certificate(facts, info.certificate_deployments[0])
    return facts


def _suite(accepted: Any) -> Suite:
    key = accepted.ephemeral_key
    if key is None:
        return Suite(accepted.cipher_suite.name)
    kind = key.type_name  # "ECDH" or "DH"
    return Suite(accepted.cipher_suite.name, kind, key.size, getattr(key, "curve_name", None))


def _certificate(facts: TlsFacts, deployment: Any) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    chain = tuple(c.public_bytes(Encoding.DER) for c in deployment.received_certificate_chain)
    verdicts = []
    results = deployment.path_validation_results
    custom = [pv for pv in results if pv.trust_store.name == "Supplied CA file"]
    for pv in custom or results:
        store = pv.trust_store.name
        ok = pv.was_validation_successful
        verdicts.append(f"{store}: {'trusted' if ok else pv.validation_error or 'not trusted'}")
    facts.chain_der = chain
    facts.chain_order_valid = deployment.received_chain_has_valid_order
    facts.sslyze_trust = "; ".join(verdicts)
    facts.ocsp_staple_trusted = deployment.ocsp_response_is_trusted


def _nassl_client(target: ScanTarget, version: str = "TLS 1.3") -> Any:
    from nassl.ssl_client import OpenSslVerifyEnum, OpenSslVersionEnum, SslClient

    sock = socket.create_connection((target.host, target.port), timeout=target.timeout_s)
    return SslClient(
        underlying_socket=sock,
        ssl_version=OpenSslVersionEnum[_NASSL_VERSIONS[version]],
        ssl_verify=OpenSslVerifyEnum.NONE,
        client_certificate_chain=target.client_cert,
        client_key=target.client_key,
        server_name_indication=target.server_name or target.host,
    )


#: nassl's names of the versions the harness makes handshakes with.
_NASSL_VERSIONS = {
    "TLS 1.0": "TLSV1",
    "TLS 1.1": "TLSV1_1",
    "TLS 1.2": "TLSV1_2",
    "TLS 1.3": "TLSV1_3",
}
_EMS = "TLS_EXTENDED_MASTER_SECRET"


@dataclass(frozen=True)
class Ems:
    """Shaped like sslyze's EmsExtensionScanResult: the harness's own measurement."""

    supports_ems_extension: bool
    how: str


def measure_ems(target: ScanTarget, facts: TlsFacts) -> None:
    """The extended master secret, measured on a handshake below TLS 1.3 (nassl).

    sslyze reports EMS "supported" without a handshake whenever the server speaks TLS 1.3,
    although EMS exists only below it: a Go 1.19 server (etcd 3.4) never negotiates it on
    TLS 1.2 and passed. Here one handshake at the highest version below 1.3 the scan saw
    accepted (with the client certificate, if any) says whether the server negotiated EMS;
    it replaces sslyze's answer. No such version: the item does not apply (TLS-006 holds
    it), and when one could not be measured, neither can EMS (an error, INCONCLUSIVE).
    """
    below = [v for v in ("TLS 1.2", "TLS 1.1", "TLS 1.0") if facts.versions.get(v)]
    if not below:
        if any(facts.versions.get(v) is None for v in ("TLS 1.2", "TLS 1.1", "TLS 1.0")):
            facts.hygiene[_EMS] = None
            facts.errors[_EMS] = "not measured: whether TLS 1.2 or below is enabled is unknown"
        return
    version = below[0]
    try:
        used = _ems_negotiated(target, version)
    except Exception as exc:  # nassl raises OpenSSLError, OSError and plain Exceptions
        facts.hygiene[_EMS] = None
        facts.errors[_EMS] = f"a {version} handshake failed: {type(exc).__name__}: {exc}"
        return
    if used is None:
        facts.hygiene[_EMS] = None
        facts.errors[_EMS] = f"OpenSSL could not tell whether the {version} handshake used EMS"
        return
    how = f"measured on a {version} handshake with nassl"
    facts.hygiene[_EMS] = Ems(used, how)
    facts.errors.pop(_EMS, None)


def _ems_negotiated(target: ScanTarget, version: str) -> bool | None:
    """Whether a full ``version`` handshake negotiated EMS (``None``: OpenSSL cannot tell)."""
    from nassl.ssl_client import ExtendedMasterSecretSupportEnum as Support

    client = _nassl_client(target, version)
    try:
        client.do_handshake()
        seen = client.get_extended_master_secret_support()
    finally:
        client.shutdown()
    return {Support.USED_IN_CURRENT_SESSION: True, Support.NOT_USED_IN_CURRENT_SESSION: False}.get(
        seen
    )


# -- what sslyze infers on a TLS 1.3 server, measured below it ------------------------------------


@dataclass(frozen=True)
class Heartbleed:
    """Shaped like sslyze's HeartbleedScanResult: its probe, run below TLS 1.3 by the harness."""

    is_vulnerable_to_heartbleed: bool
    how: str


@dataclass(frozen=True)
class CcsInjection:
    """Shaped like sslyze's OpenSslCcsInjectionScanResult, measured below TLS 1.3."""

    is_vulnerable_to_ccs_injection: bool
    how: str


@dataclass(frozen=True)
class FallbackScsv:
    """Shaped like sslyze's FallbackScsvScanResult, measured one version below the highest."""

    supports_fallback_scsv: bool
    how: str


@dataclass(frozen=True)
class _Prober:
    """What sslyze's plugins need to run one of their probes again: where, how, the scan."""

    location: Any
    network: Any
    scan: Any  # sslyze's ServerScanResult (its connectivity result)

    def capped(self, version: str, ecdh: bool) -> Any:
        """The server as sslyze sees it, if ``version`` were the highest it speaks."""
        from sslyze import TlsVersionEnum
        from sslyze.server_connectivity import ServerConnectivityInfo

        probing = self.scan.connectivity_result
        highest = TlsVersionEnum[version.replace(" ", "_").replace(".", "_")]
        capped = replace(
            probing,
            highest_tls_version_supported=highest,
            cipher_suite_supported="",  # any suite of that version
            supports_ecdh_key_exchange=ecdh,
        )
        return ServerConnectivityInfo(self.location, self.network, capped)


#: The facts :func:`measure_below_13` replaces, by sslyze scan command.
_BELOW_13_COMMANDS = ("HEARTBLEED", "OPENSSL_CCS_INJECTION", "TLS_FALLBACK_SCSV")


def below_13_version(facts: TlsFacts) -> str | None:
    """The highest version below TLS 1.3 the server accepts; ``""`` when it is unknown.

    ``None`` when none is enabled.
    """
    below = ("TLS 1.2", "TLS 1.1", "TLS 1.0")
    enabled = [v for v in below if facts.versions.get(v)]
    if enabled:
        return enabled[0]
    return "" if any(facts.versions.get(v) is None for v in below) else None


def measure_below_13(facts: TlsFacts, prober: _Prober) -> None:
    """What sslyze infers when the server speaks TLS 1.3, measured at the version below it.

    sslyze answers Heartbleed and CCS injection "not vulnerable" from TLS 1.3 support alone,
    tries supported groups at TLS 1.3 only, and sends the fallback SCSV on TLS 1.1 (whose
    refusal, on a server without TLS 1.1, it takes for SCSV support). With TLS 1.3 and a
    version below it enabled, sslyze's Heartbleed, CCS and groups probes run again at that
    version, and the SCSV goes on a handshake at it (:func:`_fallback_refused`); each
    replaces sslyze's answer, or, when it fails, leaves the fact unmeasured with why.
    sslyze's compression and renegotiation answers stand only when its legacy client can
    make a TLS 1.2 handshake (:func:`_legacy_reach`). With no version below TLS 1.3 none
    of these exists; when which is enabled is unknown, they are unmeasured.
    """
    if not facts.versions.get("TLS 1.3"):
        return  # sslyze's probes ran at the server's highest version themselves
    version = below_13_version(facts)
    if version is None:
        return
    if not version:
        unknown = "not measured: whether TLS 1.2 or below is enabled is unknown"
        # sslyze's compression and renegotiation answers come from a TLS 1.2 handshake it
        # may not have made, and its groups from TLS 1.3 alone: none of them stands.
        for command in (*_BELOW_13_COMMANDS, "TLS_COMPRESSION", "SESSION_RENEGOTIATION"):
            facts.hygiene[command] = None
            facts.errors[command] = unknown
        if facts.groups is not None:
            facts.groups = None
            facts.errors["ELLIPTIC_CURVES"] = f"groups below TLS 1.3 {unknown}"
        return
    how = f"sslyze's probe at {version} (it skips it when TLS 1.3 is on)"
    ecdh = any(s.key_exchange == "ECDH" for s in facts.suites.get(version, ()))
    info = prober.capped(version, ecdh)
    plain = _legacy_reach(facts, info)
    probes = (
        ("HEARTBLEED", lambda: Heartbleed(_plugin("heartbleed_plugin", info), how)),
        ("OPENSSL_CCS_INJECTION", lambda: CcsInjection(_plugin("ccs", info), how)),
        (
            "TLS_FALLBACK_SCSV",
            lambda: _fallback_refused(
                info, version, plain if version == "TLS 1.2" else _legacy_handshake(info, version)
            ),
        ),
    )
    for command, probe in probes:
        try:
            facts.hygiene[command] = probe()
        except Exception as exc:  # nassl and sslyze raise plain exceptions on odd peers
            facts.hygiene[command] = None
            facts.errors[command] = f"a {version} probe failed: {type(exc).__name__}: {exc}"
        else:
            facts.errors.pop(command, None)
    if ecdh and facts.groups is not None:
        _groups_at(facts, info, version)


def _plugin(name: str, info: Any) -> bool:
    """Run sslyze's one-job Heartbleed or CCS-injection probe against ``info``."""
    from sslyze.plugins.heartbleed_plugin import HeartbleedImplementation
    from sslyze.plugins.openssl_ccs_injection_plugin import OpenSslCcsInjectionImplementation

    impl = (
        HeartbleedImplementation
        if name == "heartbleed_plugin"
        else OpenSslCcsInjectionImplementation
    )
    (job,) = impl.scan_jobs_for_scan_command(info)
    return bool(job.function_to_call(*job.function_arguments))


def _groups_at(facts: TlsFacts, info: Any, version: str) -> None:
    """Add the groups sslyze's curve probe finds accepted at ``version`` to ``facts.groups``."""
    from sslyze.plugins.elliptic_curves_plugin import SupportedEllipticCurvesImplementation

    jobs = SupportedEllipticCurvesImplementation.scan_jobs_for_scan_command(info)
    try:  # one handshake per group, five at a time as the scan makes them
        with ThreadPoolExecutor(5, thread_name_prefix="sslyze-groups") as pool:
            tried = list(pool.map(lambda job: job.function_to_call(*job.function_arguments), jobs))
        found = [t.curve.name for t in tried if t.was_accepted_by_server]
    except Exception as exc:  # a failed probe leaves the groups unmeasured, not smaller
        facts.groups = None
        facts.errors["ELLIPTIC_CURVES"] = (
            f"groups at {version} not measured: {type(exc).__name__}: {exc}"
        )
        return
    facts.groups = tuple(dict.fromkeys([*(facts.groups or ()), *found]))


def _legacy_handshake(info: Any, version: str, *, scsv: bool = False) -> str:
    """A ``version`` handshake by sslyze's legacy OpenSSL client; how it ended.

    The client its compression, renegotiation and SCSV probes use. ``accepted``,
    ``inappropriate_fallback`` (RFC 7507's alert, with ``scsv``) or ``refused (why)``;
    other errors raise.
    """
    from nassl._nassl import OpenSSLError
    from sslyze import TlsVersionEnum
    from sslyze.errors import ServerRejectedTlsHandshake

    connection = info.get_preconfigured_tls_connection(
        override_tls_version=TlsVersionEnum[version.replace(" ", "_").replace(".", "_")],
        should_use_legacy_openssl=True,
    )
    if scsv:
        connection.ssl_client.enable_fallback_scsv()
    try:
        connection.connect(should_retry_connection=False)
    except OpenSSLError as exc:
        if "inappropriate fallback" in str(exc):
            return "inappropriate_fallback"
        raise
    except ServerRejectedTlsHandshake as exc:
        return f"refused ({exc.error_message})"
    finally:
        connection.close()
    return "accepted"


def _fallback_refused(info: Any, version: str, plain: str) -> FallbackScsv:
    """A ``version`` handshake with TLS_FALLBACK_SCSV, beside ``plain``, one without it.

    The server speaks a higher version, so it must refuse the first (RFC 7507: alert
    inappropriate_fallback). It refusing both says nothing (the legacy OpenSSL client may
    share no suite or group with it): then this raises.
    """
    with_scsv = _legacy_handshake(info, version, scsv=True)
    if with_scsv == "inappropriate_fallback":
        return FallbackScsv(
            True, f"a {version} handshake with the SCSV: alert inappropriate_fallback"
        )
    if with_scsv == "accepted":
        return FallbackScsv(False, f"a {version} handshake with the SCSV was accepted")
    if plain != "accepted":
        raise RuntimeError(f"{version} handshakes with the SCSV {with_scsv}, without it {plain}")
    return FallbackScsv(
        True, f"a {version} handshake with the SCSV {with_scsv}, without it accepted"
    )


def _legacy_reach(facts: TlsFacts, info: Any) -> str:
    """Whether sslyze's legacy client completes a TLS 1.2 handshake; its word for it.

    sslyze's compression and renegotiation probes use that client at TLS 1.2 on a TLS 1.3
    server, and take a refused handshake for "no compression, secure renegotiation, client
    renegotiation refused". When it is refused (a server with ChaCha20 or X25519 only,
    which OpenSSL 1.0.2 lacks), those answers are inferred: they are left unmeasured.
    """
    try:
        plain = _legacy_handshake(info, "TLS 1.2")
    except Exception as exc:  # nassl raises OpenSSLError, OSError and plain Exceptions
        plain = f"failed ({type(exc).__name__}: {exc})"
    if plain != "accepted":
        for command in ("TLS_COMPRESSION", "SESSION_RENEGOTIATION"):
            facts.hygiene[command] = None
            facts.errors[command] = (
                "not measured: sslyze's legacy OpenSSL client, which makes this probe at "
                f"TLS 1.2, cannot complete a handshake with the server ({plain}), and sslyze "
                "answers from that refusal"
            )
    return plain


# -- path validation (CERT-001) ---------------------------------------------------------------

#: OpenSSL's verify errors about a certificate's validity dates (X509_V_ERR_CERT_NOT_YET_VALID,
#: X509_V_ERR_CERT_HAS_EXPIRED): OpenSSL checks them last, after every signature up to it.
DATE_ERRORS = frozenset({9, 10})


@dataclass(frozen=True)
class PathCheck:
    """OpenSSL's verdict on a chain, as ``openssl verify`` gives it (RFC 5280 rules).

    Attributes:
        verified: Whether ``X509_verify_cert`` verified a path to the anchors.
        code: OpenSSL's ``X509_V_ERR_*`` number (0 when verified).
        error: OpenSSL's words for it.
        path: The PEM certificates of the verified path, leaf first (empty unless verified).
    """

    verified: bool
    code: int = 0
    error: str = ""
    path: tuple[str, ...] = ()


def verify_path(chain_pem: Sequence[str], anchors_pem: Sequence[str]) -> PathCheck:
    """Verify ``chain_pem`` (leaf first) to ``anchors_pem`` with OpenSSL, at the current time.

    No host name and no purpose are checked (CERT-002 judges names and key usage), as
    ``openssl verify -CAfile anchors -untrusted rest leaf`` does it.
    """
    from nassl._nassl import X509
    from nassl.cert_chain_verifier import (
        CertificateChainVerificationFailed,
        CertificateChainVerifier,
    )

    if not anchors_pem:
        return PathCheck(False, error="no trust anchors")
    verifier = CertificateChainVerifier([X509(pem) for pem in anchors_pem])
    try:
        path = verifier.verify([X509(pem) for pem in chain_pem])
    except CertificateChainVerificationFailed as exc:
        return PathCheck(False, exc.openssl_error_code, exc.openssl_error_string)
    return PathCheck(True, path=tuple(c.as_pem() for c in path))


# -- profiles (catalogue 1.3 and 1.4) -----------------------------------------------------

_GCM_CHACHA = frozenset({"AES_128_GCM", "AES_256_GCM", "CHACHA20_POLY1305"})
_CCM = frozenset({"AES_128_CCM", "AES_256_CCM"})
_CCM_8 = frozenset({"AES_128_CCM_8", "AES_256_CCM_8"})
_TLS13_MOZILLA = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_TLS13_CCM = frozenset({"TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"})
RECOMMENDED_GROUPS = frozenset({"X25519MLKEM768", "X25519", "secp256r1", "prime256v1", "secp384r1"})


@dataclass(frozen=True)
class Profile:
    """What one TLS profile allows (catalogue 1.4).

    Attributes:
        name: ``--hipaa-profile`` value.
        tls12: Whether TLS 1.2 may be enabled.
        tls12_ciphers: Bulk ciphers allowed in TLS 1.2 suites (``AES_128_GCM``...).
        tls13_suites: TLS 1.3 suites allowed.
        dhe: Whether finite-field DHE key exchange is allowed.
        other_groups_warn: Strong groups outside the recommended set are a WARN.
        max_lifetime_days: Longest allowed leaf lifetime.
        warn_lifetime_days: A lifetime above this warns (``None``: no warning).
        ecdsa_only: Leaf keys must be ECDSA.
        staple: A trusted OCSP staple is expected (WARN when missing).
    """

    name: str
    tls12: bool
    tls12_ciphers: frozenset[str]
    tls13_suites: frozenset[str]
    dhe: bool
    other_groups_warn: bool
    max_lifetime_days: int
    warn_lifetime_days: int | None
    ecdsa_only: bool
    staple: bool


def profile(name: str, *, allow_ccm: bool = False, fips_required: bool = False) -> Profile:
    """The profile ``name`` with the ``tls.allow_ccm`` / ``tls.fips_required`` adjustments."""
    mozilla = name.startswith("mozilla-")
    base = Profile(
        name=name,
        tls12=name != "mozilla-modern",
        tls12_ciphers=_GCM_CHACHA,
        tls13_suites=_TLS13_MOZILLA,
        dhe=name == "mozilla-intermediate-5.7",
        other_groups_warn=mozilla,
        max_lifetime_days=90 if name == "mozilla-modern" else 366,
        warn_lifetime_days=None if name == "mozilla-modern" else 90,
        ecdsa_only=name == "mozilla-modern",
        staple=mozilla,
    )
    if name == "nist-800-52r2":
        base = Profile(
            name=name,
            tls12=True,
            tls12_ciphers=frozenset({"AES_128_GCM", "AES_256_GCM"}) | _CCM | _CCM_8,
            tls13_suites=frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"})
            | _TLS13_CCM,
            dhe=True,
            other_groups_warn=False,
            max_lifetime_days=1095,
            warn_lifetime_days=None,
            ecdsa_only=False,
            staple=False,
        )
    ciphers, suites13 = base.tls12_ciphers, base.tls13_suites
    if allow_ccm:
        ciphers, suites13 = ciphers | _CCM, suites13 | _TLS13_CCM
    if fips_required:
        ciphers = frozenset(c for c in ciphers if "CHACHA" not in c)
        suites13 = frozenset(s for s in suites13 if "CHACHA" not in s)
    return Profile(**{**vars(base), "tls12_ciphers": ciphers, "tls13_suites": suites13})


def suite_parts(name: str) -> tuple[str, str]:
    """Key exchange + authentication, and bulk cipher, of a TLS 1.2-style IANA name.

    ``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` -> (``ECDHE_RSA``, ``AES_128_GCM``).
    """
    head, _, bulk = name.removeprefix("TLS_").removeprefix("SSL_").partition("_WITH_")
    for mac in ("_SHA384", "_SHA256", "_SHA", "_MD5"):
        if bulk.endswith(mac):
            bulk = bulk.removesuffix(mac)
            break
    return head, bulk


def group_bits(name: str) -> int | None:
    """Security-relevant size of a named group (curve bits, or FF modulus bits)."""
    if name.startswith(("X25519", "x25519")):
        return 256
    if name in ("X448", "x448"):
        return 448
    digits = "".join(ch if ch.isdigit() else " " for ch in name).split()
    if name.startswith(("prime", "secp", "sect", "brainpool", "ffdhe")) and digits:
        return int(digits[0])
    return None

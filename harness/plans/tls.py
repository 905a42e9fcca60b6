"""The run's TLS scan, shared by the TLS, CERT and MTLS controls.

One sslyze scan per run (:func:`tls_facts`), started as the run opens on a TLS target
(:func:`early_scan`, a warm-up of every control in :data:`SCANNED`), and the profile the
controls judge it by (:func:`run_profile`). An sslyze connectivity failure becomes an
ERROR observation (:func:`scan_error`), never a verdict.
"""

from __future__ import annotations

from harness.catalogue import CATALOGUE
from harness.outcome import Observation, Outcome, Status
from harness.run import Run
from harness.tls import Profile, ScanTarget, TlsFacts, profile, scan
from harness.transport import Transport


def tls_facts(run: Run) -> TlsFacts:
    """The run's sslyze scan (made once, on first use or by :func:`early_scan`)."""
    assert run.spec.host is not None
    assert run.spec.port is not None
    target = ScanTarget(
        host=run.spec.host,
        port=run.spec.port,
        server_name=run.endpoint.server_name,
        ca_bundle=run.config.path("tls.ca_bundle"),
        client_cert=run.config.path("mtls.client_cert"),
        client_key=run.config.path("mtls.client_key"),
        timeout_s=run.options.connect_timeout_s,
    )
    return run.memo("tls-facts", lambda: scan(target))


#: The controls that judge the sslyze scan.
SCANNED = (*(f"TLS-00{i}" for i in range(1, 7)), "CERT-001", "CERT-002", "CERT-003", "MTLS-001")


def early_scan(run: Run) -> None:
    """Scan a TLS target while the gRPC controls run: handshakes only, no call is made."""
    if run.endpoint.transport is Transport.TLS:
        tls_facts(run)


def run_profile(run: Run) -> Profile:
    """The run's TLS profile with the config's CCM / FIPS adjustments."""
    return profile(
        run.options.profile,
        allow_ccm=bool(run.config.get("tls.allow_ccm", False)),
        fips_required=bool(run.config.get("tls.fips_required", False)),
    )


def not_tls(run: Run, control_id: str) -> Outcome | None:
    """SKIP when the port is cleartext HTTP/2: TLS-001 fails it, nothing else to judge."""
    if run.endpoint.transport.value == "tls":
        return None
    return Outcome.skip(
        CATALOGUE[control_id], "the target serves cleartext HTTP/2 (TLS-001): no TLS to judge"
    )


def scanned(run: Run, control_id: str) -> TlsFacts | Outcome:
    """The scan's facts, or the outcome that stands in for them.

    That is SKIP on a cleartext port, and ERROR when sslyze could not scan.
    """
    if (skip := not_tls(run, control_id)) is not None:
        return skip
    facts = tls_facts(run)
    if (error := scan_error(facts)) is not None:
        return Outcome.from_observations(CATALOGUE[control_id], [error], passed="")
    return facts


def scan_error(facts: TlsFacts) -> Observation | None:
    """An ERROR observation when sslyze could not scan at all."""
    if not facts.problem:
        return None
    return Observation(
        f"sslyze scan of {facts.target}", facts.problem, "a completed scan", Status.ERROR
    )

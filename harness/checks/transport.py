"""Transport controls (TLS-*, CERT-*, MTLS-*). For now the cleartext part of TLS-001."""

from __future__ import annotations

from harness.catalogue import CATALOGUE
from harness.checks import check
from harness.errors import TargetError
from harness.outcome import Observation, Outcome, Status
from harness.run import Run
from harness.transport import probe_preface

_EXPECTED = (
    "closed connection, TLS alert, or an HTTP/1.x error: never a cleartext HTTP/2 SETTINGS frame"
)


@check("TLS-001")
def cleartext_refused(run: Run) -> Outcome:
    """No cleartext HTTP/2 (h2c) path to the service.

    On the target port and on every ``tls.extra_ports`` entry, open TCP, send the HTTP/2
    client preface with an empty SETTINGS frame (prior-knowledge h2c), and read the reply.
    A closed connection, a TLS alert or an HTTP/1.x error page passes and is recorded; a
    reply that starts with an HTTP/2 SETTINGS frame means gRPC is served in cleartext and
    fails. An extra port that cannot be reached is INCONCLUSIVE. (The legacy protocol
    version probes of TLS-001 belong to the sslyze transport suite.)
    """
    control = CATALOGUE["TLS-001"]
    assert run.spec.host is not None
    assert run.spec.port is not None
    ports = [run.spec.port, *run.config.get("tls.extra_ports", [])]
    observations = []
    for port in dict.fromkeys(ports):
        probe = f"cleartext HTTP/2 preface + SETTINGS to port {port}"
        try:
            reply = probe_preface(run.spec.host, port, timeout=run.options.connect_timeout_s)
        except TargetError as exc:
            observations.append(Observation(probe, str(exc), _EXPECTED, Status.INCONCLUSIVE))
            continue
        status = Status.FAIL if reply.serves_cleartext_h2 else Status.PASS
        observed = reply.describe()
        if reply.serves_cleartext_h2:
            observed += ": ePHI would cross the network unencrypted"
        observations.append(Observation(probe, observed, _EXPECTED, status))
    return Outcome.from_observations(
        control,
        observations,
        passed=f"no cleartext HTTP/2 on port(s) {', '.join(map(str, dict.fromkeys(ports)))}",
    )

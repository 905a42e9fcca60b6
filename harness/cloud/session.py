"""A run that reads a cloud account: with no gRPC target, or a bundled cloud estate.

``pytest --hipaa-cloud=aws`` alone, or ``--hipaa-target=spawn:aws-reference``, opens a
:class:`~harness.run.Run` whose target is not a gRPC service: nothing is dialled when it
opens, the CLOUD checks read the account through :mod:`harness.cloud`, and every other
control is SKIP with :data:`NO_GRPC_TARGET` (:func:`judged_here`).
"""

from __future__ import annotations

from harness.config import Config
from harness.run import Run, RunOptions
from harness.spawn import spawn_configured
from harness.target import TargetSpec
from harness.transport import Detected, Transport
from targets.catalog import CLOUD_PREFIX

#: How long a bundled cloud estate may take to be built: moto's backends load on first use
#: and the estate is some hundred calls (about 5 s on an idle 2-core host, far more under load).
SPAWN_TIMEOUT_S = 120.0

#: Why a gRPC control is SKIP on a cloud-only run.
NO_GRPC_TARGET = (
    "no gRPC target: a cloud-only run judges the CLOUD controls only "
    "(give --hipaa-target=HOST:PORT for the others)"
)


def judged_here(control_id: str, cloud_only: bool) -> bool:
    """Whether a run judges ``control_id`` (a cloud-only run judges CLOUD controls only)."""
    return not cloud_only or control_id.startswith(CLOUD_PREFIX)


def open_cloud_run(spec: TargetSpec | None, user_config: Config, options: RunOptions) -> Run:
    """A run with no gRPC target; a bundled cloud estate is spawned first.

    Raises:
        TargetError: the bundled estate cannot be started.
        ConfigError: its generated config does not load.
    """
    spawned = None
    config = user_config
    if spec is not None and spec.is_spawn:
        spawned, spec, config = spawn_configured(spec, user_config, timeout=SPAWN_TIMEOUT_S)
    provider = config.str_("cloud.provider") or "cloud"
    spec = spec or TargetSpec(f"cloud:{provider}")
    where = f" (emulated at {spec.address})" if spec.host else ""
    detected = Detected(Transport.H2C, f"cloud-only run: {provider} account{where}")
    from harness.channels import Endpoint

    endpoint = Endpoint(address="", transport=Transport.H2C)
    return Run(spec, config, endpoint, detected, options, spawned)

"""Cloud evidence: providers read an account into facts; the CLOUD checks judge the facts.

A provider is a module with ``collect(config, progress) -> Estate``
(:class:`harness.cloud.facts.Estate`), read-only through its own SDK. The checks in
``harness/checks/cloud.py`` never see an SDK: adding Azure or GCP is adding a provider here
(see docs/ARCHITECTURE.md, "Cloud evidence").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from harness.cloud.facts import Estate
from harness.config import Config

#: The manual controls (catalogue section 5) that CLOUD controls automate in part: the report
#: says so beside the attestation, which is still asked for what the API cannot show.
PARTLY_AUTOMATES: dict[str, tuple[str, ...]] = {
    "ATT-002": ("CLOUD-001",),
    "ATT-004": ("CLOUD-002", "CLOUD-003"),
    "ATT-009": ("CLOUD-008",),
}

#: Providers ``--hipaa-cloud`` accepts, and the module that collects each.
PROVIDERS = {"aws": "harness.cloud.aws_read"}


def collect(provider: str, config: Config, progress: Callable[[str], None] | None = None) -> Estate:
    """The estate ``provider`` reads for the scope ``config`` declares.

    Raises:
        KeyError: no such provider.
    """
    module = importlib.import_module(PROVIDERS[provider])
    estate: Estate = module.collect(config, progress)
    return estate

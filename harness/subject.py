"""What the run is configured with: the config, the principals, the issuer's keys, the schema.

The schema (the target's methods) comes from a descriptor set, ``.proto`` files, or server
reflection, loaded once when first asked for; its absence is a reason, not an exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from harness.config import Config
from harness.descriptors import (
    MethodCatalogue,
    compile_protos,
    fetch_via_reflection,
    load_descriptor_set,
)
from harness.errors import DescriptorError
from harness.principals import Principal, presentation_of, principals_from
from harness.tokens import IssuerKeys, load_issuer_keys, renewer

#: The liveness method when the config names none.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


class Subject:
    """The config in force, the principals it names, and the service's schema."""

    def __init__(
        self,
        config: Config,
        channel: Callable[[], grpc.Channel],
        connect_timeout_s: float,
    ) -> None:
        self.config = config
        self._channel = channel
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._keys: IssuerKeys | None = None
        self._catalogue: MethodCatalogue | None = None
        self._catalogue_problem: str | None = None
        source = config.sources[-1] if config.sources else "config"
        self.principals: dict[str, Principal] = principals_from(
            config.table("auth.principals"),
            source,
            refresh=True,
            renew=renewer(lambda: self.issuer_keys()),
            presentation=presentation_of(config),
        )

    @property
    def liveness(self) -> str:
        """The method that says whether the target is up (``schema.liveness_method``)."""
        return self.config.str_("schema.liveness_method") or HEALTH_CHECK

    def principal(self, name: str) -> Principal | None:
        """The configured principal ``name``, or ``None``."""
        return self.principals.get(name)

    def issuer_keys(self) -> IssuerKeys:
        """The token issuer's keys as far as the config gives them (spawned targets: all)."""
        with self._lock:
            if self._keys is None:
                source = self.config.sources[-1] if self.config.sources else "config"
                self._keys = load_issuer_keys(
                    self.config.path("auth.jwks_file"),
                    self.config.path("auth.issuer_private_key"),
                    source,
                )
            return self._keys

    def catalogue(self) -> MethodCatalogue | None:
        """The target's methods from descriptors, or ``None`` (see :meth:`catalogue_problem`)."""
        with self._lock:
            if self._catalogue is not None or self._catalogue_problem is not None:
                return self._catalogue
        catalogue, problem = self._load_catalogue()
        with self._lock:
            self._catalogue, self._catalogue_problem = catalogue, problem
        return catalogue

    def loaded_catalogue(self) -> MethodCatalogue | None:
        """The catalogue if it is loaded already: never loads it (no call is made)."""
        with self._lock:
            return self._catalogue

    def catalogue_problem(self) -> str:
        """Why :meth:`catalogue` is ``None``."""
        self.catalogue()
        return self._catalogue_problem or ""

    def _load_catalogue(self) -> tuple[MethodCatalogue | None, str | None]:
        try:
            path = self.config.path("schema.descriptor_set")
            if path is not None:
                return load_descriptor_set(path), None
            files = self.config.get("schema.proto_files")
            if files:
                return compile_protos(files, self.config.get("schema.proto_paths", [])), None
            try:
                return fetch_via_reflection(self._channel(), timeout=self._connect_timeout_s), None
            except DescriptorError as exc:
                return None, (
                    f"no schema.descriptor_set or schema.proto_files in the config, and {exc}"
                )
        except DescriptorError as exc:
            return None, str(exc)

"""The declared access policy joined with the method catalogue.

Which methods are public, which write, who may call what (``auth.rbac_matrix``), and what
request to send for each. Writes get their template only under ``safety.allow_mutations``;
otherwise the empty default message, which a correct server refuses before it touches any
record and a broken one cannot use to change a real record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.config import Config
from harness.descriptors import MethodCatalogue, MethodInfo
from harness.errors import DescriptorError
from harness.run import Run

#: Names that AIP-style APIs give to methods that only read (AIP-131, 132, 231; watch,
#: search and lookup variants). Anything else may write.
_READ_NAME = re.compile(
    r"^(Get|BatchGet|List|Search|Query|Lookup|Find|Fetch|Read|Describe|Count|Watch|"
    r"Subscribe)(?![a-z])"
)
_INFRA_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


def shown_read(method: MethodInfo, config: Config) -> bool:
    """Whether ``method`` is shown to only read: declared so, or marked so by its schema.

    ``schema.read_methods``, ``idempotency_level = NO_SIDE_EFFECTS``, a ``google.api.http``
    GET, or an AIP read name (``Get``, ``List``, ``Search``...). A method not shown to be a
    read is treated as a write: it gets its template only with ``safety.allow_mutations``.
    """
    if method.path in config.str_list("schema.read_methods"):
        return True
    if method.idempotency == "NO_SIDE_EFFECTS" or method.http_verb == "get":
        return True
    if method.http_verb in ("put", "post", "delete", "patch") or method.idempotency:
        return method.http_verb == "post" and bool(_READ_NAME.match(method.name))
    return bool(_READ_NAME.match(method.name))


@dataclass(frozen=True)
class Policy:
    """Methods and the declared policy for them."""

    catalogue: MethodCatalogue
    public: frozenset[str]
    writes: frozenset[str]
    matrix: dict[str, frozenset[str]]
    allow_mutations: bool

    @classmethod
    def of(cls, run: Run) -> Policy | None:
        """The policy of ``run``'s target, or ``None`` when there are no descriptors."""
        catalogue = run.catalogue()
        if catalogue is None:
            return None
        return cls.from_config(catalogue, run.config)

    @classmethod
    def from_config(cls, catalogue: MethodCatalogue, config: Config) -> Policy:
        """The policy ``config`` declares for ``catalogue``'s methods."""
        methods = [m.path for m in catalogue.methods]
        writes = (
            set(config.str_list("schema.write_methods"))
            if config.has("schema.write_methods")
            else {m.path for m in catalogue.methods if not shown_read(m, config)}
        )
        matrix = {
            k: frozenset(v) for k, v in config.table("auth.rbac_matrix").items() if k in methods
        }
        return cls(
            catalogue=catalogue,
            public=frozenset(config.str_list("schema.public_methods")),
            writes=frozenset(writes),
            matrix=matrix,
            allow_mutations=bool(config.get("safety.allow_mutations")),
        )

    def protected(self) -> list[MethodInfo]:
        """Every declared method that is not public and not gRPC infrastructure."""
        return [
            m
            for m in self.catalogue.methods
            if m.path not in self.public and m.service not in _INFRA_SERVICES
        ]

    def is_write(self, path: str) -> bool:
        """True for methods that may change state (declared, or not shown to be a read)."""
        return path in self.writes

    def allowed(self, path: str) -> frozenset[str] | None:
        """Principals the matrix allows on ``path``; ``None`` when the matrix has no entry."""
        return self.matrix.get(path)

    def representative_read(self, principal: str) -> MethodInfo | None:
        """The first non-write method ``principal`` may call, per the matrix."""
        for m in self.protected():
            allowed = self.matrix.get(m.path)
            if allowed is not None and principal in allowed and not self.is_write(m.path):
                return m
        return None

    def request(self, run: Run, path: str) -> bytes:
        """The request to send: the template, or the default instance for guarded writes.

        Raises:
            DescriptorError: the configured template does not parse.
        """
        return self.request_from(run.config, path)

    def request_from(self, config: Config, path: str) -> bytes:
        """:meth:`request` with the templates of ``config``."""
        templates = config.table("schema.request_templates")
        if self.is_write(path) and not self.allow_mutations:
            return self.catalogue.request_bytes(path, None)
        try:
            return self.catalogue.request_bytes(path, templates.get(path))
        except KeyError:
            raise DescriptorError(f"{path} is not in the descriptors") from None

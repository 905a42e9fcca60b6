"""The reference service in-process, for white-box fuzzing (``fuzz.inprocess_entrypoint``).

``target(workdir=..., defects=[...])`` builds the same handlers and interceptor the
spawned server runs, verifying tokens with the issuer key the spawned target wrote to
``workdir`` (and its opaque-token store, when it issued opaque tokens), so the harness's
configured principals authenticate in-process too. The audit log goes to a private
directory of its own, never to the running server's log. Simulated storage delays and the
per-identity rate limit are off: a fuzzer calls far faster than any client, and each call
should spend its time in the service's logic.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from harness.inprocess import InProcessTarget
from targets.pki import TokenIssuer
from targets.reference import server


def target(workdir: str, defects: list[str] | None = None) -> InProcessTarget:
    """The reference service with ``defects``, ready for :class:`harness.inprocess.InProcess`."""
    log = logging.getLogger("hipaagrpc.reference")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    # Under the spawned target's workdir, so it goes with it even when a fuzzer exits hard.
    scratch = Path(tempfile.mkdtemp(prefix="inprocess-", dir=workdir))
    issuer = TokenIssuer.load(Path(workdir), server.ISSUER, server.AUDIENCE)
    store = Path(workdir) / server.OPAQUE_STORE  # the opaque tokens it issued, if any
    options = server.Options(
        workdir=scratch,
        defects=frozenset(defects or ()),
        simulated_io=False,
        token_store=store if store.is_file() else None,
    )
    built = server.build(options, issuer)
    built.gatekeeper.rate_limited = False

    def close() -> None:
        built.audit.close()
        shutil.rmtree(scratch, ignore_errors=True)

    return InProcessTarget(
        handlers=built.handlers,
        interceptors=[built.gatekeeper],
        public_methods=frozenset(server.PUBLIC_METHODS),
        close=close,
    )

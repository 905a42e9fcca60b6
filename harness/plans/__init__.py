"""Call plans several controls share: what to send, made once per run (``Run.memo``).

Below the check rooms (:mod:`harness.checks`): a plan never imports a check, so a room
can take another family's calls without importing that family. Judging stays with the
checks and :mod:`harness.oracles`.
"""

"""The evidence bundle: what a compliance lead hands an auditor, and what CI reads.

One typed path, one writer per output:

* :mod:`~harness.reporting.model`: the typed results (``RunInfo``, ``ControlResult``,
  ``Results``) and their JSON form, ``results.json`` schema 2.0 (1.0 is still read).
* :mod:`~harness.reporting.redact`: the one redaction every text that leaves the process
  passes (bearer tokens, JWT-shaped strings, the run's canaries).
* :mod:`~harness.reporting.results`: every control of the catalogue from the tests' results
  and the attestations; totals, probe coverage, the roll-up by HIPAA standard.
* :mod:`~harness.reporting.html`, :mod:`~harness.reporting.junit`,
  :mod:`~harness.reporting.sarif`, :mod:`~harness.reporting.markdown`,
  :mod:`~harness.reporting.manifest`: the views, each from a typed ``Results``.
* :mod:`~harness.reporting.bundle`: the self-scan (EVID-001), the bundle's files, the
  atomic write, ``verify``; :mod:`~harness.reporting.diff`: ``report diff``.
* :mod:`~harness.reporting.intoto` (the in-toto statement and its DSSE envelope) and
  :mod:`~harness.reporting.signing` (``evidence.signing_key`` / ``signing_cmd``, and
  ``report verify --public-key``); :mod:`~harness.reporting.oscal`: ``--hipaa-oscal``.
* :mod:`~harness.reporting.figures`: what report.html's pictures show (AUTHZ-001's grid,
  the TLS summary, probe coverage per family, the trend across runs), read off the results.
* :mod:`~harness.reporting.fleet`: ``report merge``, one page and one file over many bundles.

Nothing here imports pytest. The package itself imports nothing, so naming one module
loads only what that module needs.
"""

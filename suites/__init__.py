"""The bundled conformance suites, collected when pytest runs with ``--hipaa-target``.

Each test names its control in its function name and its ``hipaa_control`` marker, so
``pytest -k REFL`` and the short summary (``-rf``) show control IDs.
"""

"""One run judges a live service and its cloud estate together (issue 17's "beside").

``pytest --hipaa-target=... --hipaa-cloud=aws`` with the estate's ``[cloud.aws]`` in the
user's config: the CLOUD controls are judged from the account (moto on 127.0.0.1) and the
gRPC controls from the service, in one report, each under its HIPAA standard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from conftest import control_statuses
from targets import aws_reference

pytestmark = pytest.mark.slow


@pytest.fixture
def estate() -> Iterator[str]:
    """The compliant estate on a moto server of its own, left empty for the next test."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    aws_reference.reset(url)  # another module's estate may live in this process
    aws_reference.Estate(url, frozenset()).build()
    try:
        yield url
    finally:
        aws_reference.reset(url)
        server.stop()


def test_a_target_and_its_cloud_are_judged_in_one_report(pytester, estate):
    pytester.makefile(
        ".toml",
        hipaa=f'[cloud.aws]\nregions = ["us-east-1"]\nendpoint_url = "{estate}"\n'
        "[audit]\nmin_retention_days = 2190\n",
    )
    statuses = control_statuses(
        pytester,
        "--hipaa-target=spawn:reference",
        "--hipaa-cloud=aws",
        "--hipaa-config=hipaa.toml",
        "--hipaa-report=bundle",
        "-n",
        "0",
        "-k",
        "CLOUD or REFL",
    )
    cloud = {c: s for c, s in statuses.items() if c.startswith("CLOUD-")}
    assert len(cloud) == 8
    assert set(cloud.values()) == {"PASS"}
    assert {c: s for c, s in statuses.items() if c.startswith("REFL-")} == {
        "REFL-001": "PASS",
        "REFL-002": "PASS",
    }
    results = json.loads((pytester.path / "bundle" / "results.json").read_text())
    judged = {c["id"]: c for c in results["controls"] if c["status"] == "PASS"}
    assert {"CLOUD-001", "CLOUD-002", "REFL-001"} <= set(judged)
    # Each under its HIPAA citation, as the gRPC controls are.
    assert "164.312" in json.dumps(judged["CLOUD-002"]["citation"])
    assert "164.312" in json.dumps(judged["REFL-001"]["citation"])
    page = (pytester.path / "bundle" / "report.html").read_text()
    assert "CLOUD-001" in page
    assert "REFL-001" in page

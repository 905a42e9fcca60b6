"""The reference's audit store and its management API: refused to all, mutable under a defect."""

from __future__ import annotations

import json
from types import SimpleNamespace

import grpc
import pytest

from harness.checks import audit as checks
from targets.reference import server


def written(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def log(tmp_path):
    audit = server.AuditLog(tmp_path / "audit.jsonl")
    for i in range(1, 6):
        audit.append({"request_id": f"r{i}", "outcome": "OK"})
    yield audit
    audit.close()


def verifies(path):
    chain = checks.verify_chain(written(path), checks.ChainSpec())
    return (chain.links, chain.gaps)


def test_an_edit_resealed_by_the_store_leaves_a_chain_that_verifies(log, tmp_path):
    """Why AUDIT-005 alone cannot see audit-mutable: the store re-seals what it changes."""
    path = tmp_path / "audit.jsonl"
    assert log.edit(2, lambda r: {**r, "outcome": "PERMISSION_DENIED"})
    assert log.edit(4, lambda r: None)
    log.append({"request_id": "r6", "outcome": "OK"})
    events = written(path)
    assert [e["request_id"] for e in events] == ["r1", "r2", "r3", "r5", "r6"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[1]["outcome"] == "PERMISSION_DENIED"
    assert verifies(path) == ([], [])
    assert not log.edit(9, lambda r: None)


def test_deleting_the_first_and_the_last_record_keeps_the_chain(log, tmp_path):
    path = tmp_path / "audit.jsonl"
    assert log.edit(1, lambda r: None)
    assert log.edit(4, lambda r: None)
    log.append({"request_id": "r6", "outcome": "OK"})
    assert [e["request_id"] for e in written(path)] == ["r2", "r3", "r4", "r6"]
    assert verifies(path) == ([], [])


class Aborted(Exception):
    pass


def context():
    def abort(code, message):
        raise Aborted(code)

    return SimpleNamespace(abort=abort)


@pytest.mark.parametrize(("defects", "refused"), [(frozenset(), True), ({"audit-mutable"}, False)])
def test_the_management_api_refuses_unless_the_defect_is_on(log, tmp_path, defects, refused):
    admin = server.AuditAdmin(log, frozenset(defects))
    request = SimpleNamespace(seq=3, field="outcome", value="OK")
    before = (tmp_path / "audit.jsonl").read_text()
    if refused:
        with pytest.raises(Aborted) as denied:
            admin.update_event(request, context())
        assert denied.value.args[0] == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(Aborted):
            admin.delete_event(SimpleNamespace(seq=3), context())
        assert (tmp_path / "audit.jsonl").read_text() == before
    else:
        assert admin.update_event(request, context()).seq == 3
        assert admin.delete_event(SimpleNamespace(seq=3), context()).seq == 3
        assert (tmp_path / "audit.jsonl").read_text() != before
        chained = SimpleNamespace(seq=1, field="hash", value="0" * 64)
        with pytest.raises(Aborted) as bad:
            admin.update_event(chained, context())
        assert bad.value.args[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_nobody_may_call_it_unless_the_defect_grants_admins():
    for method in server.MGMT_METHODS:
        assert server.policy_table()[method].roles == frozenset()
        assert server.policy_table(frozenset({"audit-mutable"}))[method].roles == {"admin"}

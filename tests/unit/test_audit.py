"""The hash-chained audit log: records chain, reopening continues the chain, any edit is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcore.audit import GENESIS, AuditError, AuditLog, verify


def test_records_chain_and_a_reopened_log_continues_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    first = log.record("party_registered", party_id="party-a")
    second = log.record("job_submitted", job_id="j1")
    assert first["prev"] == GENESIS and second["prev"] == first["hash"] and second["seq"] == 2
    reopened = AuditLog(tmp_path / "audit.log")
    third = reopened.record("round_committed", job_id="j1", round=1, parties=["a", "b"])
    assert third["prev"] == second["hash"] and third["seq"] == 3
    assert verify(tmp_path / "audit.log") == (3, third["hash"])


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap", "garbage"])
def test_any_tampering_breaks_the_chain_at_that_line(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(4):
        log.record("sum_decrypted", job_id="j", contributors=3, values=i)
    lines = path.read_text().splitlines()
    if tamper == "edit":
        record = json.loads(lines[1])
        record["contributors"] = 1
        lines[1] = json.dumps(record, sort_keys=True)
    elif tamper == "delete":
        del lines[1]
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[1] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match=r"audit.log:2:"):
        verify(path)
    with pytest.raises(AuditError):
        AuditLog(path)  # a broken log is not silently continued

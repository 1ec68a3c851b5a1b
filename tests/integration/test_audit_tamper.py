"""A real coordinator's audit log tampered with between runs: refused at restart with the line named, also
by `fedsuite audit verify` through the CLI; a torn last line is dropped, recorded, and the log goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.local import LocalFederation
from tests.integration.test_processes_e2e import job, start_parties
from tests.unit.test_audit import rechain


def audit_verify(federation: LocalFederation) -> subprocess.CompletedProcess[str]:
    """`fedsuite audit verify` as a person runs it: the anchor read from the log's directory, the node's certificate."""
    return subprocess.run(
        [sys.executable, "-m", "fedsuite.cli", "audit", "verify", str(federation.workdir / "state" / "audit.log"),
         "--cert", str(federation.certs / "coordinator.pem")],
        capture_output=True, text=True, timeout=60, check=False,
        env={name: value for name, value in os.environ.items() if name != "COLUMNS"})  # whole lines


def refused_restart(federation: LocalFederation) -> str:
    """Restart the coordinator, expect it to exit, and return its log tail."""
    with pytest.raises(RuntimeError, match="coordinator exited with 2") as caught:
        federation.restart("coordinator")
    return str(caught.value)


def test_a_tampered_log_stops_the_coordinator_and_a_torn_line_does_not(
        federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=2))
        assert list(admin.watch(job_id, timeout_s=120))[-1].type == pb.JOB_EVENT_TYPE_SUCCEEDED
    assert federation.nodes["coordinator"].stop() == 0
    log = federation.workdir / "state" / "audit.log"
    intact = log.read_bytes()
    count = len(intact.splitlines())
    checked = audit_verify(federation)
    assert checked.returncode == 0, checked.stderr
    assert f"{count} records, chain intact; head matches" in checked.stdout and "every record signed by" in checked.stdout

    # a crash mid-write: the torn line is dropped and recorded, and the coordinator goes on serving
    torn = intact + b'{"event": "round_committed", "job_id": "'
    log.write_bytes(torn)
    checked = audit_verify(federation)
    assert checked.returncode == 2 and f"audit.log:{count + 1}: the last line is torn (40 bytes" in checked.stderr
    federation.restart("coordinator")
    assert federation.nodes["coordinator"].stop() == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[count]["event"] == "audit_torn_line_dropped" and records[count]["bytes_dropped"] == 40
    assert audit_verify(federation).returncode == 0
    intact, count = log.read_bytes(), len(records)

    # the last three lines deleted: refused at restart and by `audit verify`, both naming the first missing line
    log.write_bytes(b"".join(intact.splitlines(keepends=True)[:-3]))
    sentence = (f"audit.log:{count - 2}: the log ends after {count - 3} records but coordinator.db anchors {count}:"
                f" lines {count - 2}-{count} were removed")
    assert sentence in refused_restart(federation)
    checked = audit_verify(federation)
    assert checked.returncode == 2 and sentence in checked.stderr

    # a party id edited in line 2 and the whole log re-chained after it: found at line 2, not later
    lines = intact.decode().splitlines()
    record = json.loads(lines[1])
    assert record["event"] == "party_registered"
    record["address"] = "127.0.0.1:1"
    lines[1] = json.dumps(record)
    log.write_text("\n".join(rechain(lines, 1)) + "\n")  # as anyone without the key can
    assert "audit.log:2: the signature does not match the record (edited or forged)" in refused_restart(federation)
    assert "audit.log:2: the signature does not match" in audit_verify(federation).stderr

    # put back, the log is continued
    log.write_bytes(intact)
    federation.restart("coordinator")
    assert federation.nodes["coordinator"].stop() == 0
    assert audit_verify(federation).returncode == 0


"""A real coordinator's audit log tampered with between runs: refused at restart with the line named, also
by `fedsuite audit verify` through the CLI; a torn last line is dropped, recorded, and the log goes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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



def test_a_log_restored_together_with_its_anchor_is_caught_by_what_the_parties_witnessed(
        federation: LocalFederation, breast_dir: Path) -> None:
    """Log and store rolled back as one (an earlier backup of the state dir): consistent with each other, so
    only the heads the parties were shown can tell; `audit verify --witness` and the parties themselves do."""
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        assert admin.wait(admin.submit(job(rounds=2)), 120).state == pb.JOB_STATE_SUCCEEDED
    assert federation.nodes["coordinator"].stop() == 0
    state, backup = federation.workdir / "state", federation.workdir / "state-backup"
    shutil.copytree(state, backup)
    federation.restart("coordinator")  # the parties' heartbeats show them the head, soon beyond the backup
    with federation.admin() as admin:
        assert admin.wait(admin.submit(job(rounds=2)), 120).state == pb.JOB_STATE_SUCCEEDED
    time.sleep(1.5)  # a heartbeat (every 0.5 s) after the job's last record
    assert federation.nodes["coordinator"].stop() == 0
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # the rollback: audit.log and coordinator.db from the same earlier moment

    assert audit_verify(federation).returncode == 0  # the log agrees with its own anchor
    heads = federation.workdir / "party-state" / "party-a" / "coordinator-audit-heads.jsonl"
    checked = subprocess.run([*audit_verify(federation).args, "--witness", str(heads)],
                             capture_output=True, text=True, timeout=60, check=False)
    count = len((state / "audit.log").read_text().splitlines())
    assert checked.returncode == 2, checked.stdout
    assert f"audit.log:{count + 1}: the log ends after {count} records but party-a saw" in checked.stderr, checked.stderr
    assert "cut short, with its anchor, or restored from an earlier copy" in checked.stderr

    # restarted on the restored state, the coordinator shows the parties a head that went back: each says so
    federation.restart("coordinator")
    deadline = time.monotonic() + 30
    while not _logged(federation, "party-a", "coordinator_audit_went_back"):
        assert time.monotonic() < deadline, federation.log_tail("party-a")
        time.sleep(0.2)
    [report] = _logged(federation, "party-a", "coordinator_audit_went_back")
    assert "the audit log now has fewer records" in report["reason"] and "party-a saw as record" in report["reason"]


def _logged(federation: LocalFederation, node: str, event: str) -> list[dict[str, object]]:
    lines = federation.nodes[node].log_path.read_text(errors="replace").splitlines()
    return [record for record in map(json.loads, filter(lambda line: line.startswith("{"), lines))
            if record.get("event") == event]

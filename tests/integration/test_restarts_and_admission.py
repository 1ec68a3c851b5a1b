"""Restarted, frozen and missing parties, over real processes and real mTLS on 127.0.0.1.

A restarted party is usable by the very next job; a party that stops answering ends
its round within seconds of its heartbeat lapsing; a job that cannot run is refused at
submit; one that waits for offline parties is PENDING and says so; a job that lost its
quorum is resumed with `fedsuite job resume`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import HOST, PARTIES
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from tests.integration.test_processes_e2e import job, start_parties, start_vertical, wait_for_event


def dropped(events: list[pb.JobEvent]) -> list[pb.JobEvent]:
    return [e for e in events if e.type == pb.JOB_EVENT_TYPE_PARTY_DROPPED]


def test_party_restarted_between_jobs_is_used_by_the_next_job_at_once(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        # party-b dies during a job that goes on without it: the coordinator's channel to it fails
        # and, left alone, gRPC would back off reconnecting for up to two minutes
        job_id = admin.submit(job(rounds=30, min_parties=2, timeout_s=20, retries=1, epochs=5))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_STARTED, 2)
        federation.nodes["party-b"].kill()
        assert admin.wait(job_id, 120).state == pb.JOB_STATE_SUCCEEDED
        federation.restart_party("party-b")
        started = time.monotonic()
        second = admin.submit(job(rounds=2, min_parties=3, timeout_s=20, retries=0))
        final = admin.wait(second, 60)
        events = list(admin.watch(second, 10))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert not dropped(events), [e.message for e in dropped(events)]
    assert all(sorted(r.parties) == list(PARTIES) for r in final.rounds)
    assert time.monotonic() - started < 30


def test_party_restarted_within_a_job_rejoins_its_later_rounds(federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=100, min_parties=2, timeout_s=20, retries=1, epochs=100))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_STARTED, 2)
        federation.nodes["party-c"].kill()
        federation.restart_party("party-c")
        final = admin.wait(job_id, 180)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert final.current_round == 100
    members = [list(r.parties) for r in final.rounds]
    assert any("party-c" not in m for m in members) and "party-c" in members[-1], members


def test_frozen_party_ends_its_round_when_its_heartbeat_lapses(federation: LocalFederation, breast_dir: Path) -> None:
    """SIGSTOP keeps the TCP connection open, so only the heartbeat can tell: the round must not wait
    its round_timeout_s (60 s) for it, and the retry must not wait for it again."""
    federation.start_coordinator(party_timeout_s=2.0)
    start_parties(federation, breast_dir)
    frozen = federation.nodes["party-c"].process
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=4, min_parties=2, timeout_s=60, retries=2, epochs=100))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_STARTED, 1)
        os.kill(frozen.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            final = admin.wait(job_id, 120)
            elapsed = time.monotonic() - stopped
            events = list(admin.watch(job_id, 10))
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    lost = dropped(events)
    assert lost and all(e.party_id == "party-c" and "went offline" in e.message for e in lost), [e.message for e in lost]
    assert elapsed < 30, elapsed


def test_lost_quorum_fails_fast_and_job_resume_continues_from_the_last_committed_round(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    federation.start_coordinator(party_timeout_s=2.0)
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=8, min_parties=3, timeout_s=60, retries=2, epochs=20))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 2)
        federation.nodes["party-c"].kill()
        killed = time.monotonic()
        failed = admin.wait(job_id, 120)
        assert time.monotonic() - killed < 20  # not two round timeouts of 60 s
        assert failed.state == pb.JOB_STATE_FAILED
        assert "party-c" in failed.reason and "min_parties=3" in failed.reason, failed.reason
        committed_before = failed.current_round
        assert committed_before >= 2

        federation.restart_party("party-c")
        resumed = subprocess.run(
            [sys.executable, "-m", "fedsuite.cli", "job", "resume", job_id, "--coordinator",
             federation.coordinator_address, "--certs", str(federation.certs)],
            capture_output=True, text=True, timeout=60,
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"continuing after round {committed_before}" in resumed.stdout
        final = admin.wait(job_id, 180)
        events = list(admin.watch(job_id, 10))
        again = _code_of(lambda: admin.resume(job_id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert [r.round for r in final.rounds] == list(range(1, 9))
    committed = [e.round for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    assert committed == list(range(1, 9))  # no round lost or repeated across the failure
    assert any(e.type == pb.JOB_EVENT_TYPE_RESUMED for e in events)
    assert again[0] == grpc.StatusCode.FAILED_PRECONDITION and "only a failed job" in again[1]


def _code_of(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()  # type: ignore[attr-defined]


REFUSED = [
    ({"horizontal": {"dataset": "nonexistent", "model": {"type": "logistic_regression"}}},
     "no registered party declares dataset 'nonexistent'"),
    ({"horizontal": {"dataset": "breast", "model": {"type": "logistic_regression"}, "min_parties": 4}},
     "min_parties=4 but only 3 registered parties declare dataset 'breast'"),
    ({"vertical": {"guest": "party-a", "hosts": ["telecom"], "guest_dataset": "breast", "host_dataset": "breast"}},
     "host 'telecom' was never registered"),
    ({"vertical": {"guest": "party-a", "hosts": ["party-b"], "guest_dataset": "breast", "host_dataset": "other"}},
     "host 'party-b' declares no dataset 'other'"),
    ({"vertical_predict": {"guest": "nobody", "hosts": ["party-b"], "guest_dataset": "breast",
                           "host_dataset": "breast", "model_id": "m"}},
     "guest 'nobody' was never registered"),
]


def test_job_that_cannot_run_is_refused_at_submit(federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        for spec, named in REFUSED:
            code, details = _code_of(lambda spec=spec: admin.submit(parse_job_spec(spec)))
            assert code == grpc.StatusCode.FAILED_PRECONDITION, (spec, code)
            assert named in details, details
        assert admin.list() == []  # nothing was stored


def test_job_waiting_for_offline_parties_is_pending_with_the_reason(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    federation.start_coordinator(party_timeout_s=1.5)
    start_parties(federation, breast_dir)
    federation.nodes["party-c"].kill()
    with federation.admin() as admin:
        while {p.party_id: p.online for p in admin.parties()}["party-c"]:
            time.sleep(0.1)
        job_id = admin.submit(job(rounds=2, min_parties=3, timeout_s=60))
        deadline = time.monotonic() + 10
        while (waiting := admin.get(job_id)).state != pb.JOB_STATE_PENDING or not waiting.reason:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert "offline: party-c" in waiting.reason and "min_parties=3" in waiting.reason, waiting.reason
        watch = subprocess.Popen(  # what a person following the job sees
            [sys.executable, "-m", "fedsuite.cli", "job", "watch", job_id, "--coordinator",
             federation.coordinator_address, "--certs", str(federation.certs)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        federation.restart_party("party-c")
        final = admin.wait(job_id, 60)
        events = list(admin.watch(job_id, 10))
        shown, _ = watch.communicate(timeout=30)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    waits = [e for e in events if e.type == pb.JOB_EVENT_TYPE_WAITING]
    assert len(waits) == 1 and "party-c" in waits[0].message
    assert watch.returncode == 0 and "pending: waiting up to round_timeout_s=60 s" in shown, shown
    assert "offline: party-c" in shown and "Traceback" not in shown


def test_download_during_training_always_gets_a_whole_committed_round(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    """Rounds commit and prune their predecessors while the model is downloaded over and over."""
    federation.start_coordinator()
    start_parties(federation, breast_dir, ("party-a", "party-b"))
    failures: list[str] = []
    rounds_seen: list[int] = []
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=60, min_parties=2, epochs=1))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 1)
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (admin.wait(job_id, 180), done.set()), daemon=True)
        waiter.start()
        while not done.is_set():
            try:
                model = admin.download_model(job_id)
                rounds_seen.append(model.info.round)
                assert len(model.weights) == 2 and model.weights[0].shape == (30, 1)
            except grpc.RpcError as err:
                failures.append(f"{err.code()}: {err.details()}")  # type: ignore[attr-defined]
        final = admin.get(job_id)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert not failures, failures[:3]
    assert len(set(rounds_seen)) >= 10 and rounds_seen == sorted(rounds_seen), rounds_seen[-5:]


def test_vertical_job_shows_its_epochs_and_resumes_from_the_start_after_losing_its_host(
    federation: LocalFederation,
) -> None:
    spec = start_vertical(federation, epochs=30)
    with federation.admin() as admin:
        job_id = admin.submit(spec)
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 3)
        assert admin.get(job_id).current_round >= 3  # `job list` and `job get` see the epochs as they pass
        federation.nodes[HOST].kill()
        failed = admin.wait(job_id, 60)
        assert failed.state == pb.JOB_STATE_FAILED and HOST in failed.reason, failed.reason
        federation.restart_party(HOST)
        resumed = admin.resume(job_id)
        assert resumed.state in (pb.JOB_STATE_PENDING, pb.JOB_STATE_RUNNING)  # its thread may already run
        final = admin.wait(job_id, 180)
        events = list(admin.watch(job_id, 10))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert final.vertical_result.epochs == 30 and final.current_round == 30
    assert any(e.type == pb.JOB_EVENT_TYPE_RESUMED and "from the start" in e.message for e in events)
    assert events[-1].message == "trained 30 epochs"


def test_coordinator_killed_between_a_round_commit_and_its_audit_record_loses_neither_event_nor_record(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    """The one instant a kill from outside cannot hit: round 3 is in SQLite, its audit record not yet."""
    coordinator = federation.start_coordinator(env={"FEDCORE_CRASH_AT": "round_committed:3"})
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=6, min_parties=3, epochs=5))
    assert coordinator.process.wait(60) == 137  # died at the crash point
    federation.restart("coordinator")  # without the crash point
    with federation.admin() as admin:
        final = admin.wait(job_id, 120)
        events = list(admin.watch(job_id, 10))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    committed = [e.round for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    assert committed == list(range(1, 7))  # round 3's event came with its commit, once
    assert all(sorted(r.parties) == list(PARTIES) for r in final.rounds)  # the resumed round waited for all three
    audit = federation.workdir / "state" / "audit.log"
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    rounds = [(r["round"], r.get("recovered", False)) for r in records
              if r["event"] == "round_committed" and r["job_id"] == job_id]
    assert rounds == [(1, False), (2, False), (3, True), (4, False), (5, False), (6, False)], rounds
    verified = subprocess.run([sys.executable, "-m", "fedsuite.cli", "audit", "verify", str(audit)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr

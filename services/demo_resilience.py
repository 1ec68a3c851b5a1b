"""The demo's `resilience` part: the first mistakes and the first restarts, as a new user meets them.

Three things, each measured: a job that cannot run is refused at submit with a sentence;
a party killed and restarted between two jobs is used by the very next job; a job that
loses its quorum fails at once (not after its round timeouts) and `job resume` finishes
it from its last committed round, with no round lost or repeated.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from rich.console import Console

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation

RESTARTED = "party-b"
LOST = "party-c"


def _job(rounds: int, min_parties: int, epochs: int = 5) -> pb.JobSpec:
    return parse_job_spec({"name": "resilience", "horizontal": {
        "dataset": "breast", "model": {"type": "logistic_regression"}, "rounds": rounds, "local_epochs": epochs,
        "min_parties": min_parties, "round_timeout_s": 60, "max_round_retries": 2, "evaluate_every": 0}})


def run_resilience(federation: LocalFederation, console: Console) -> dict[str, Any]:
    """Needs the horizontal parties (party-a, -b, -c holding `breast`) running."""
    with federation.admin() as admin:
        try:
            admin.submit(pb.JobSpec(name="typo", horizontal=pb.HorizontalJobSpec(
                dataset="braest", model=pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION))))
            refusal = {"code": "OK", "message": "accepted (it should not have been)"}
        except grpc.RpcError as err:
            refusal = {"code": err.code().name, "message": err.details()}  # type: ignore[attr-defined]
        console.print(f"resilience: a job for dataset 'braest' is refused at submit: {refusal['message']}")

        federation.nodes[RESTARTED].kill()
        federation.restart_party(RESTARTED)
        started = time.monotonic()
        after_restart = admin.wait(admin.submit(_job(2, 3)), 120)
        restart_seconds = time.monotonic() - started
        console.print(f"resilience: {RESTARTED} killed and restarted; the next job "
                      f"{pb.JobState.Name(after_restart.state).removeprefix('JOB_STATE_')} in {restart_seconds:.1f} s")

        job_id = admin.submit(_job(12, 3, epochs=50))
        for event in admin.watch(job_id, timeout_s=120):
            if event.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED and event.round >= 2:
                break
        federation.nodes[LOST].kill()
        killed = time.monotonic()
        failed = admin.wait(job_id, 120)
        fail_seconds = time.monotonic() - killed
        console.print(f"resilience: {LOST} killed mid-job (min_parties=3): the job failed after "
                      f"{fail_seconds:.1f} s with round_timeout_s=60: {failed.reason}")
        federation.restart_party(LOST)
        admin.resume(job_id)
        resumed = admin.wait(job_id, 180)
        events = list(admin.watch(job_id, timeout_s=10))
    committed = [e.round for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    console.print(f"resilience: resumed after round {failed.current_round}: "
                  f"{pb.JobState.Name(resumed.state).removeprefix('JOB_STATE_')}, rounds committed {committed[0]}.."
                  f"{committed[-1]} once each" if committed else "resilience: no round committed")
    checks = {
        "refused_at_submit": refusal["code"] == "FAILED_PRECONDITION" and "braest" in refusal["message"],
        "restarted_party_used_at_once": after_restart.state == pb.JOB_STATE_SUCCEEDED
        and all(RESTARTED in r.parties for r in after_restart.rounds),
        "quorum_loss_failed_fast": failed.state == pb.JOB_STATE_FAILED and fail_seconds < 30,
        "resumed_without_losing_or_repeating_rounds": resumed.state == pb.JOB_STATE_SUCCEEDED
        and committed == list(range(1, 13)),
    }
    return {
        "refusal": refusal,
        "restart": {"party": RESTARTED, "next_job_state": pb.JobState.Name(after_restart.state),
                    "next_job_seconds": round(restart_seconds, 2)},
        "quorum_loss": {"party": LOST, "failed_after_round": failed.current_round,
                        "seconds_to_fail": round(fail_seconds, 2), "reason": failed.reason},
        "resume": {"job_id": job_id, "state": pb.JobState.Name(resumed.state), "rounds": resumed.current_round,
                   "committed_rounds": committed},
        "checks": checks,
        "within_tolerance": all(checks.values()),
    }

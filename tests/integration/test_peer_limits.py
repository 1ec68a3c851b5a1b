"""One party cannot starve another: a peer gets its own share of a node's calls (issue 7.6).

Real processes over mTLS: party-x, with a valid certificate, floods party-a with 160
concurrent Federation.Exchange calls for jobs that do not exist while a horizontal job
runs over party-a and party-b. Such a call is refused at once (it used to wait 10 s for its
job inside a worker thread), and party-x's calls beyond its share not even admitted.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.rpc import make_channel

from fedsuite.local import LocalFederation
from tests.integration.test_processes_e2e import job, start_parties

FLOOD = 160


def test_a_flooding_peer_is_held_to_its_share_and_the_others_keep_training(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir, ("party-a", "party-b"))
    channel = make_channel(federation.nodes["party-a"].address, federation.tls("party-x"))
    exchange = channel.stream_unary("/fedsuite.v1.Federation/Exchange",
                                    request_serializer=vertical_pb2.ExchangeChunk.SerializeToString,
                                    response_deserializer=vertical_pb2.ExchangeAck.FromString)
    outcomes: list[tuple[grpc.StatusCode, float]] = []
    lock = threading.Lock()

    def flood(i: int) -> None:
        chunk = vertical_pb2.ExchangeChunk(job_id=f"no-such-job-{i}", tag="t", total_bytes=1, data=b"x")
        started = time.monotonic()
        try:
            exchange(iter([chunk]), timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
        with lock:
            outcomes.append((code, time.monotonic() - started))

    with federation.admin() as admin, ThreadPoolExecutor(max_workers=FLOOD) as pool:
        job_id = admin.submit(job(rounds=10, min_parties=2, timeout_s=20, retries=0, epochs=5))
        list(pool.map(flood, range(FLOOD)))  # all at once, while the job's rounds run
        final = admin.wait(job_id, 120)
        events = list(admin.watch(job_id, 10))
    channel.close()
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert not [e for e in events if e.type == pb.JOB_EVENT_TYPE_PARTY_DROPPED]
    assert all(sorted(r.parties) == ["party-a", "party-b"] for r in final.rounds)
    codes = [code for code, _ in outcomes]
    assert len(codes) == FLOOD and set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.NOT_FOUND in codes
    # refused before holding a worker: no call for a made-up job waited for it
    assert max(seconds for code, seconds in outcomes if code == grpc.StatusCode.NOT_FOUND) < 3.0, outcomes

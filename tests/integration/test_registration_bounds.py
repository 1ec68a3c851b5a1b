"""Registrations are bounded field by field, and ListParties pages, so no party can make the
registry, ListParties or the audit log grow by megabytes (a real coordinator over real mTLS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedcore.proto import common_pb2, coordinator_pb2 as pb, coordinator_pb2_grpc
from fedcore.rpc import make_channel

from fedsuite.client import CoordinatorAdmin
from fedsuite.coordinator import Coordinator
from tests.conftest import in_process_coordinator, tls
from tests.integration.test_bad_input import _run_job as run_job
from tests.integration.test_bad_input import start_party

DEADLINE = 10.0
PARTY_NAMES = ["bank", "party-a", "party-b", "party-c", "party-x", "telecom"]


@pytest.fixture
def coordinator(pki: Path, tmp_path: Path) -> Iterator[Coordinator]:
    service = in_process_coordinator(pki, tmp_path)
    yield service
    service.stop()


def register(pki: Path, coordinator: Coordinator, name: str, **fields: object) -> pb.RegisterPartyResponse:
    stub = coordinator_pb2_grpc.CoordinatorStub(make_channel(f"127.0.0.1:{coordinator.port}", tls(pki, name)))
    request = pb.RegisterPartyRequest(party_id=name, role=common_pb2.PARTY_ROLE_GUEST,
                                      address=f"127.0.0.1:{9000 + PARTY_NAMES.index(name)}",  # each its own
                                      datasets=[common_pb2.DatasetInfo(name="breast", n_rows=100, n_features=30)])
    for key, value in fields.items():
        if key == "datasets":
            del request.datasets[:]
            request.datasets.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, key, value)
    return stub.RegisterParty(request, timeout=DEADLINE)


def many(n: int, **info: object) -> list[common_pb2.DatasetInfo]:
    return [common_pb2.DatasetInfo(name=f"d{i}", **info) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("fields, says", [
    ({"organisation": "x" * 6_400_000}, "organisation is 6400000 characters; at most 200"),
    ({"datasets": many(100_000)}, "100000 datasets declared; at most 64"),
    ({"datasets": [common_pb2.DatasetInfo(name="n" * 129)]}, "is not valid (1-128 letters"),
    ({"datasets": [common_pb2.DatasetInfo(name="a b")]}, "dataset name 'a b' is not valid"),
    ({"datasets": many(1, n_rows=10**13)}, "dataset 'd0': n_rows and n_eval_rows must be in 0..1000000000000"),
    ({"datasets": many(1, n_eval_rows=-1)}, "n_rows and n_eval_rows must be in"),
    ({"datasets": many(1, n_features=2_000_000)}, "dataset 'd0': n_features must be in 0..1000000"),
    ({"address": "h" * 300 + ":1"}, "is not host:port"),
])
def test_oversized_or_out_of_range_registration_is_refused_and_nothing_is_stored(
    pki: Path, coordinator: Coordinator, fields: dict, says: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        register(pki, coordinator, "party-x", **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert says in caught.value.details()  # type: ignore[attr-defined]
    assert len(caught.value.details()) < 300  # type: ignore[attr-defined]  # a sentence, not an echo of the input
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin"), timeout_s=DEADLINE) as admin:
        assert admin.parties() == []
    audited = coordinator.audit.path.read_text() if coordinator.audit.path.exists() else ""
    assert "party_registered" not in audited


def test_list_parties_pages_through_every_party_once(pki: Path, coordinator: Coordinator) -> None:
    for name in PARTY_NAMES:
        register(pki, coordinator, name, datasets=many(64, n_rows=1, n_features=1))  # the most a party may declare
    stub = coordinator_pb2_grpc.CoordinatorStub(make_channel(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")))
    pages, token = [], ""
    while True:
        page = stub.ListParties(pb.ListPartiesRequest(page_size=4, page_token=token), timeout=DEADLINE)
        pages.append([p.party_id for p in page.parties])
        token = page.next_page_token
        if not token:
            break
    assert pages == [PARTY_NAMES[:4], PARTY_NAMES[4:]]
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin"), timeout_s=DEADLINE) as admin:
        assert [p.party_id for p in admin.parties()] == PARTY_NAMES  # the client reads every page
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListParties(pb.ListPartiesRequest(page_size=501), timeout=DEADLINE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_a_party_may_not_register_another_live_nodes_address(pki: Path, tmp_path: Path) -> None:
    """Issue 7.1: party-x registering party-a's (or the arbiter's) address would have the coordinator call
    that node in party-x's name, counting party-a's data twice."""
    service = in_process_coordinator(pki, tmp_path, arbiter="127.0.0.1:7", arbiter_id="arbiter")
    try:
        register(pki, service, "party-a", address="127.0.0.1:5")
        for address, holder in (("127.0.0.1:5", "party-a"), ("127.0.0.1:7", "arbiter")):
            with pytest.raises(grpc.RpcError) as caught:
                register(pki, service, "party-x", address=address)
            assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
            assert f"address {address} is held by {holder}" in caught.value.details()  # type: ignore[attr-defined]
        register(pki, service, "party-a", address="127.0.0.1:5")  # its own address, again: a restart
        with CoordinatorAdmin(f"127.0.0.1:{service.port}", tls(pki, "admin"), timeout_s=DEADLINE) as admin:
            assert {p.party_id: p.address for p in admin.parties()} == {"party-a": "127.0.0.1:5"}
    finally:
        service.stop()


def test_a_party_registering_another_partys_server_under_another_name_is_not_called(
    pki: Path, tmp_path: Path, breast_dir: Path,
) -> None:
    """Issue 7.1: party-x registers party-a's server as "localhost:P" (party-a registered "127.0.0.1:P").
    The coordinator dials it expecting party-x's certificate, gets party-a's, and refuses: party-a's
    data is counted once, the model is the one of party-a and party-b alone."""
    coordinator = in_process_coordinator(pki, tmp_path)
    parties = [start_party(pki, breast_dir, coordinator, name) for name in ("party-a", "party-b")]
    try:
        honest = run_job(pki, coordinator)
        port = parties[0].port
        declared = {p.party_id: p for p in CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin"),
                                                             timeout_s=DEADLINE).parties()}["party-a"].datasets
        register(pki, coordinator, "party-x", address=f"localhost:{port}", datasets=declared)  # what party-a declares
        hijacked = run_job(pki, coordinator)
        with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin"), timeout_s=DEADLINE) as admin:
            events = list(admin.watch(hijacked[0].job_id, 5))
    finally:
        for party in parties:
            party.stop()
        coordinator.stop()
    final, weights = hijacked
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert all(sorted(r.parties) == ["party-a", "party-b"] for r in final.rounds)
    dropped = [e for e in events if e.type == pb.JOB_EVENT_TYPE_PARTY_DROPPED]
    assert dropped and all(e.party_id == "party-x" for e in dropped), [e.message for e in dropped]
    for mine, theirs in zip(weights, honest[1]):
        np.testing.assert_array_equal(mine, theirs)


def test_refused_calls_are_recorded_up_to_a_share_then_summarised(pki: Path, tmp_path: Path) -> None:
    """Issue 7.7: 300 refused calls wrote 300 fsynced audit lines; now 10 per caller a minute, then one summary."""
    service = in_process_coordinator(pki, tmp_path)
    stub = coordinator_pb2_grpc.CoordinatorStub(make_channel(f"127.0.0.1:{service.port}", tls(pki, "party-x")))
    try:
        for _ in range(300):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListJobs(pb.ListJobsRequest(), timeout=DEADLINE)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    finally:
        service.stop()
    records = [json.loads(line) for line in service.audit.path.read_text().splitlines()]
    refused = [r for r in records if r["event"] == "call_refused"]
    summaries = [r for r in records if r["event"] == "calls_refused_summary"]
    assert len(refused) == 10 and all(r["caller"] == "party-x" for r in refused)
    assert [(s["caller"], s["refused"], s["total"]) for s in summaries] == [
        ("party-x", {"/fedsuite.v1.Coordinator/ListJobs": 290}, 290)]

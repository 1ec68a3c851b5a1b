"""Secure aggregation with Paillier over real gRPC and mTLS: parties encrypt n_k w_k under the arbiter's
key, the coordinator adds ciphertexts it cannot read, the arbiter decrypts only sums of two or more."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedcore import tensors
from fedcore.audit import verify
from fedcore.crypto.paillier import PublicKey
from fedcore.data import DatasetConfig
from fedcore.proto import arbiter_pb2, arbiter_pb2_grpc
from fedcore.proto import coordinator_pb2 as pb
from fedcore.rpc import make_channel

from fedsuite.arbiter import Arbiter, ArbiterConfig
from fedsuite.client import CoordinatorAdmin
from fedsuite.coordinator import Coordinator, CoordinatorConfig
from fedsuite.demo import PARTIES, horizontal_job
from fedsuite.party import Party, PartyConfig
from tests.conftest import tls, tls_config


@pytest.fixture(scope="module")
def federation(pki: Path, breast_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, Arbiter]]:
    base = tmp_path_factory.mktemp("secure")
    arbiter = Arbiter(ArbiterConfig(node_id="arbiter", listen="127.0.0.1:0", tls=tls_config(pki, "arbiter")), base)
    coordinator = Coordinator(CoordinatorConfig(
        node_id="coordinator", listen="127.0.0.1:0", tls=tls_config(pki, "coordinator"), state_dir=str(base / "state"),
        heartbeat_interval_s=0.5, party_timeout_s=30, arbiter=f"127.0.0.1:{arbiter.port}"), base)
    parties = [Party(PartyConfig(
        node_id=name, listen="127.0.0.1:0", tls=tls_config(pki, name), coordinator=f"127.0.0.1:{coordinator.port}",
        datasets={"breast": DatasetConfig(path=str(breast_dir / f"{name}-train.csv"),
                                          eval_path=str(breast_dir / f"{name}-eval.csv"), label="target")}), breast_dir)
        for name in PARTIES]
    assert all(p.registered.wait(10) for p in parties)
    yield coordinator, arbiter
    for party in parties:
        party.stop()
    coordinator.stop()
    arbiter.stop()


def run(pki: Path, coordinator: Coordinator, secure: bool) -> tuple[pb.Job, list[np.ndarray]]:
    spec = horizontal_job(4)
    if secure:
        spec.horizontal.secure_aggregation = pb.SECURE_AGGREGATION_PAILLIER
        spec.horizontal.key_bits = 1024
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        job = admin.wait(admin.submit(spec), 180)
        return job, admin.download_model(job.job_id).weights


def test_encrypted_aggregation_gives_the_plaintext_model(pki: Path, federation: tuple[Coordinator, Arbiter]) -> None:
    coordinator, _ = federation
    plain_job, plain = run(pki, coordinator, secure=False)
    secure_job, secure = run(pki, coordinator, secure=True)
    assert plain_job.state == secure_job.state == pb.JOB_STATE_SUCCEEDED, secure_job.reason
    assert all(sorted(r.parties) == sorted(PARTIES) for r in secure_job.rounds)
    for mine, theirs in zip(secure, plain, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
    assert secure_job.rounds[-1].eval.auc > 0.98


def test_arbiter_never_decrypts_a_single_update_and_only_for_the_coordinator(
    pki: Path, federation: tuple[Coordinator, Arbiter],
) -> None:
    coordinator, arbiter = federation
    secure_job, _ = run(pki, coordinator, secure=True)
    stub = arbiter_pb2_grpc.ArbiterStub(make_channel(f"127.0.0.1:{arbiter.port}", tls(pki, "coordinator")))
    key = PublicKey.from_n(stub.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id=secure_job.job_id), timeout=10).n)
    one_update = key.encrypt(np.array([0.25, -1.5]), exponent=-40)

    def requests(contributors: int) -> Iterator[arbiter_pb2.DecryptSumRequest]:
        yield arbiter_pb2.DecryptSumRequest(header=arbiter_pb2.DecryptSumHeader(
            job_id=secure_job.job_id, round=1, contributors=contributors, lengths=[2]))
        for chunk in tensors.iter_ciphertext_chunks([one_update]):
            yield arbiter_pb2.DecryptSumRequest(chunk=chunk)

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.DecryptSum(requests(1), timeout=10))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "at least 2" in caught.value.details()  # type: ignore[attr-defined]
    party = arbiter_pb2_grpc.ArbiterStub(make_channel(f"127.0.0.1:{arbiter.port}", tls(pki, "party-a")))
    with pytest.raises(grpc.RpcError) as caught:
        list(party.DecryptSum(requests(3), timeout=10))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_secure_aggregation_needs_two_parties_and_a_valid_key_size(pki: Path, federation: tuple[Coordinator, Arbiter]) -> None:
    coordinator, _ = federation
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        for field, value, named in (("min_parties", 1, "horizontal.min_parties"), ("key_bits", 512, "horizontal.key_bits")):
            spec = horizontal_job(2)
            spec.horizontal.secure_aggregation = pb.SECURE_AGGREGATION_PAILLIER
            setattr(spec.horizontal, field, value)
            with pytest.raises(grpc.RpcError) as caught:
                admin.submit(spec)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and named in caught.value.details()  # type: ignore[attr-defined]


def test_both_audit_logs_record_what_happened_and_verify(pki: Path, federation: tuple[Coordinator, Arbiter]) -> None:
    coordinator, arbiter = federation
    job, _ = run(pki, coordinator, secure=True)
    stranger = arbiter_pb2_grpc.ArbiterStub(make_channel(f"127.0.0.1:{arbiter.port}", tls(pki, "admin")))
    with pytest.raises(grpc.RpcError):
        stranger.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="x"), timeout=10)
    coordinator_records = [json.loads(line) for line in coordinator.audit.path.read_text().splitlines()]
    arbiter_records = [json.loads(line) for line in arbiter.audit.path.read_text().splitlines()]
    assert verify(coordinator.audit.path)[0] == len(coordinator_records)
    assert verify(arbiter.audit.path)[0] == len(arbiter_records)
    mine = [r for r in coordinator_records if r.get("job_id") == job.job_id]
    assert [r["event"] for r in mine] == ["job_submitted", *["round_committed"] * 4, "job_finished"]
    assert {r["party_id"] for r in coordinator_records if r["event"] == "party_registered"} == set(PARTIES)
    decrypted = [r for r in arbiter_records if r["event"] == "sum_decrypted" and r["job_id"] == job.job_id]
    assert len(decrypted) == 4 and all(r["contributors"] == 3 for r in decrypted)
    assert any(r["event"] == "key_created" and r["job_id"] == job.job_id for r in arbiter_records)
    assert any(r["event"] == "call_refused" and r["caller"] == "admin" and r["method"].endswith("CreateKey")
               for r in arbiter_records)

"""Secure aggregation with Paillier over real gRPC and mTLS: parties encrypt n_k w_k under the arbiter's
key, the coordinator adds ciphertexts it cannot read, the arbiter decrypts only sums of two or more."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from structlog.testing import capture_logs

from fedcore import tensors
from fedcore.audit import verify
from fedcore.crypto.paillier import PublicKey, generate_keypair
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


@contextmanager
def secure_federation(pki: Path, breast_dir: Path, base: Path) -> Iterator[tuple[Coordinator, Arbiter]]:
    """An arbiter, a coordinator that uses it and the demo's three parties, in this process."""
    arbiter = Arbiter(ArbiterConfig(node_id="arbiter", listen="127.0.0.1:0", tls=tls_config(pki, "arbiter")), base)
    coordinator = Coordinator(CoordinatorConfig(
        node_id="coordinator", listen="127.0.0.1:0", tls=tls_config(pki, "coordinator"), state_dir=str(base / "state"),
        heartbeat_interval_s=0.5, party_timeout_s=30, arbiter=f"127.0.0.1:{arbiter.port}"), base)
    parties = [Party(PartyConfig(
        node_id=name, listen="127.0.0.1:0", tls=tls_config(pki, name), coordinator=f"127.0.0.1:{coordinator.port}",
        datasets={"breast": DatasetConfig(path=str(breast_dir / f"{name}-train.csv"),
                                          eval_path=str(breast_dir / f"{name}-eval.csv"), label="target")}), breast_dir)
        for name in PARTIES]
    try:
        assert all(p.registered.wait(10) for p in parties)
        yield coordinator, arbiter
    finally:
        for party in parties:
            party.stop()
        coordinator.stop()
        arbiter.stop()


@pytest.fixture(scope="module")
def federation(pki: Path, breast_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Coordinator, Arbiter]]:
    with secure_federation(pki, breast_dir, tmp_path_factory.mktemp("secure")) as nodes:
        yield nodes


def secure_job(rounds: int) -> pb.JobSpec:
    """The demo's horizontal job with secure aggregation under a 1024-bit key (fast to make)."""
    spec = horizontal_job(rounds)
    spec.horizontal.secure_aggregation = pb.SECURE_AGGREGATION_PAILLIER
    spec.horizontal.key_bits = 1024
    return spec


def run(pki: Path, coordinator: Coordinator, secure: bool) -> tuple[pb.Job, list[np.ndarray]]:
    spec = secure_job(4) if secure else horizontal_job(4)
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
    _, arbiter = federation
    stub = arbiter_stub(pki, arbiter, "coordinator")
    key = PublicKey.from_n(stub.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="probe", key_bits=1024), timeout=30).n)

    def requests(contributors: int) -> Iterator[arbiter_pb2.DecryptSumRequest]:
        return decrypt_requests(key, "probe", contributors)

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.DecryptSum(requests(1), timeout=10))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "at least 2" in caught.value.details()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as caught:
        list(arbiter_stub(pki, arbiter, "party-a").DecryptSum(requests(3), timeout=10))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    stub.ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id="probe"), timeout=10)


def arbiter_stub(pki: Path, arbiter: Arbiter, name: str) -> arbiter_pb2_grpc.ArbiterStub:
    return arbiter_pb2_grpc.ArbiterStub(make_channel(f"127.0.0.1:{arbiter.port}", tls(pki, name)))


def decrypt_requests(key: PublicKey, job_id: str, contributors: int) -> Iterator[arbiter_pb2.DecryptSumRequest]:
    """A DecryptSum stream of one encrypted vector, said to be the sum of ``contributors`` updates."""
    yield arbiter_pb2.DecryptSumRequest(header=arbiter_pb2.DecryptSumHeader(
        job_id=job_id, round=1, contributors=contributors, lengths=[2]))
    for chunk in tensors.iter_ciphertext_chunks([key.encrypt(np.array([0.25, -1.5]), exponent=-40)]):
        yield arbiter_pb2.DecryptSumRequest(chunk=chunk)


def has_key(stub: arbiter_pb2_grpc.ArbiterStub, job_id: str) -> bool:
    try:
        stub.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id=job_id), timeout=10)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            raise
        return False
    return True


def within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds within ``seconds`` (the coordinator releases a key in the background)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_only_the_job_creates_its_key_and_the_key_ends_with_the_job(
    pki: Path, federation: tuple[Coordinator, Arbiter],
) -> None:
    """A party that learns a job id cannot create its key first; once the job ends the arbiter has
    forgotten the key, so nothing more can be decrypted for it."""
    coordinator, arbiter = federation
    spec = secure_job(2)
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        job_id = admin.submit(spec)
        with pytest.raises(grpc.RpcError) as caught:
            arbiter_stub(pki, arbiter, "party-a").CreateKey(
                arbiter_pb2.CreateKeyRequest(job_id=job_id, key_bits=2048), timeout=30)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert "party-a" in caught.value.details()  # type: ignore[attr-defined]
        job = admin.wait(job_id, 180)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    stub = arbiter_stub(pki, arbiter, "coordinator")
    assert within(10, lambda: not has_key(stub, job_id))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.DecryptSum(decrypt_requests(generate_keypair(1024)[0], job_id, 3), timeout=10))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    records = [json.loads(line) for line in arbiter.audit.path.read_text().splitlines()]
    assert [r["event"] for r in records if r.get("job_id") == job_id and r["event"].startswith("key_")] == [
        "key_created", "key_released"]


def test_a_cancelled_jobs_key_is_released(pki: Path, federation: tuple[Coordinator, Arbiter]) -> None:
    coordinator, arbiter = federation
    spec = secure_job(200)
    stub = arbiter_stub(pki, arbiter, "coordinator")
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        job_id = admin.submit(spec)
        assert within(30, lambda: has_key(stub, job_id)), "the job never created its key"
        assert admin.cancel(job_id).state == pb.JOB_STATE_CANCELLED
    assert within(10, lambda: not has_key(stub, job_id))


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


def resumed(admin: CoordinatorAdmin, job_id: str) -> bool:
    """Resume the job; False while its thread is still winding down."""
    try:
        admin.resume(job_id)
    except grpc.RpcError as err:
        if "winding down" not in err.details():  # type: ignore[attr-defined]
            raise
        return False
    return True


def test_a_resumed_secure_job_gets_a_new_key_and_finishes(pki: Path, federation: tuple[Coordinator, Arbiter]) -> None:
    """The key of a failed job is released, so its resumption asks the arbiter for a new one."""
    coordinator, arbiter = federation
    spec = secure_job(40)
    stub = arbiter_stub(pki, arbiter, "coordinator")
    with CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        job_id = admin.submit(spec)
        first_key = None
        for event in admin.watch(job_id, 60):
            if event.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED:  # the key exists and is in use: take it away
                first_key = stub.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id=job_id), timeout=10).n
                assert stub.ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id=job_id), timeout=10).released
                break
        failed = admin.wait(job_id, 60)
        assert failed.state == pb.JOB_STATE_FAILED and "no key for job" in failed.reason, failed.reason
        assert within(10, lambda: resumed(admin, job_id))
        final = admin.wait(job_id, 180)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert [r.round for r in final.rounds] == list(range(1, 41))
    records = [json.loads(line) for line in arbiter.audit.path.read_text().splitlines()]
    created = [r for r in records if r["event"] == "key_created" and r.get("job_id") == job_id]
    assert len(created) == 2 and first_key is not None
    assert within(10, lambda: not has_key(stub, job_id))


def test_a_job_ends_with_its_own_reason_when_the_arbiter_is_gone_and_the_failed_release_is_logged(
    pki: Path, breast_dir: Path, tmp_path: Path,
) -> None:
    with secure_federation(pki, breast_dir, tmp_path) as (coordinator, arbiter), \
            CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin")) as admin:
        stub = arbiter_stub(pki, arbiter, "coordinator")
        job_id = admin.submit(secure_job(200))
        assert within(30, lambda: has_key(stub, job_id)), "the job never created its key"
        with capture_logs() as logs:
            arbiter.stop()
            job = admin.wait(job_id, 60)
            assert within(10, lambda: any(r["event"] == "key_release_failed" for r in logs))
        assert job.state == pb.JOB_STATE_FAILED and "the arbiter did not decrypt" in job.reason, job.reason
        failed = next(r for r in logs if r["event"] == "key_release_failed")
        assert failed["job_id"] == job_id and "UNAVAILABLE" in failed["reason"], failed
        assert admin.get(job_id).state == pb.JOB_STATE_FAILED

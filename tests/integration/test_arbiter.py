"""The arbiter's key custody over real gRPC and mTLS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedcore.crypto.paillier import PublicKey
from fedcore.proto import arbiter_pb2, arbiter_pb2_grpc
from fedcore.rpc import make_channel

from fedsuite.arbiter import Arbiter, ArbiterConfig
from tests.conftest import tls, tls_config


@pytest.fixture(scope="module")
def arbiter(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arbiter]:
    config = ArbiterConfig(node_id="arbiter", listen="127.0.0.1:0", default_key_bits=1024, tls=tls_config(pki, "arbiter"))
    service = Arbiter(config, tmp_path_factory.mktemp("arbiter"))
    yield service
    service.stop()


def stub(pki: Path, arbiter: Arbiter, name: str) -> arbiter_pb2_grpc.ArbiterStub:
    return arbiter_pb2_grpc.ArbiterStub(make_channel(f"127.0.0.1:{arbiter.port}", tls(pki, name)))


def test_key_is_created_once_per_job_and_readable_by_parties(pki: Path, arbiter: Arbiter) -> None:
    created = stub(pki, arbiter, "coordinator").CreateKey(arbiter_pb2.CreateKeyRequest(job_id="j1"), timeout=30)
    assert created.key_bits == 1024 and PublicKey.from_n(created.n, allow_insecure=False).key_bits == 1024
    again = stub(pki, arbiter, "coordinator").CreateKey(arbiter_pb2.CreateKeyRequest(job_id="j1", key_bits=1024), timeout=30)
    assert again.n == created.n
    read = stub(pki, arbiter, "party-a").GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id="j1"), timeout=10)
    assert read.n == created.n
    other = stub(pki, arbiter, "coordinator").CreateKey(arbiter_pb2.CreateKeyRequest(job_id="j2"), timeout=30)
    assert other.n != created.n


@pytest.mark.parametrize("name, request_, code, words", [
    ("coordinator", arbiter_pb2.CreateKeyRequest(job_id="j3", key_bits=512), grpc.StatusCode.INVALID_ARGUMENT, "key_bits"),
    ("coordinator", arbiter_pb2.CreateKeyRequest(job_id=""), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
    ("admin", arbiter_pb2.CreateKeyRequest(job_id="j4"), grpc.StatusCode.PERMISSION_DENIED, "admin"),
])
def test_bad_key_requests(pki: Path, arbiter: Arbiter, name: str, request_: arbiter_pb2.CreateKeyRequest,
                          code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(pki, arbiter, name).CreateKey(request_, timeout=30)
    assert caught.value.code() == code and words in caught.value.details()  # type: ignore[attr-defined]


def test_a_job_keeps_its_key_size_and_unknown_jobs_have_no_key(pki: Path, arbiter: Arbiter) -> None:
    coordinator = stub(pki, arbiter, "coordinator")
    coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="j5", key_bits=1024), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="j5", key_bits=2048), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as caught:
        coordinator.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id="never"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_a_party_may_not_create_a_key_and_the_jobs_own_key_is_then_created(pki: Path, arbiter: Arbiter) -> None:
    """A party that learnt a job id cannot pre-empt the job's key with a weaker one."""
    with pytest.raises(grpc.RpcError) as caught:
        stub(pki, arbiter, "party-a").CreateKey(arbiter_pb2.CreateKeyRequest(job_id="learnt", key_bits=1024), timeout=30)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "party-a" in caught.value.details() and "CreateKey" in caught.value.details()  # type: ignore[attr-defined]
    created = stub(pki, arbiter, "coordinator").CreateKey(arbiter_pb2.CreateKeyRequest(job_id="learnt", key_bits=2048),
                                                          timeout=60)
    assert created.key_bits == 2048


def test_a_released_key_is_gone_and_only_the_coordinator_releases(pki: Path, arbiter: Arbiter) -> None:
    coordinator = stub(pki, arbiter, "coordinator")
    coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="ends"), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        stub(pki, arbiter, "party-a").ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id="ends"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert coordinator.ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id="ends"), timeout=10).released
    with pytest.raises(grpc.RpcError) as caught:
        coordinator.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id="ends"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert not coordinator.ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id="ends"), timeout=10).released


def test_keys_are_bounded_in_number_and_expire_when_unused(pki: Path, tmp_path: Path) -> None:
    config = ArbiterConfig(node_id="arbiter", listen="127.0.0.1:0", default_key_bits=1024, max_keys=2,
                           key_idle_ttl_s=1.5, tls=tls_config(pki, "arbiter"))
    small = Arbiter(config, tmp_path)
    try:
        coordinator = stub(pki, small, "coordinator")
        for job_id in ("a", "b"):
            coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id=job_id), timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="c"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "max_keys" in caught.value.details()  # type: ignore[attr-defined]
        coordinator.ReleaseKey(arbiter_pb2.ReleaseKeyRequest(job_id="a"), timeout=10)
        coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="c"), timeout=30)
        time.sleep(1.0)
        coordinator.CreateKey(arbiter_pb2.CreateKeyRequest(job_id="c"), timeout=30)  # use keeps "c" alive
        time.sleep(1.0)
        coordinator.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id="c"), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            coordinator.GetPublicKey(arbiter_pb2.GetPublicKeyRequest(job_id="b"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        events = [json.loads(line)["event"] for line in small.audit.path.read_text().splitlines()]
        assert events.count("key_expired") == 1 and "key_released" in events and "key_refused" in events
    finally:
        small.stop()

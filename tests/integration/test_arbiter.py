"""The arbiter's key custody over real gRPC and mTLS."""

from __future__ import annotations

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

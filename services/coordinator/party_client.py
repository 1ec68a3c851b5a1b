"""The coordinator's calls to parties: every one with a deadline.

The Train and Evaluate streams send the global weights as bytes serialised once per
round (``global_chunk`` has field number 2 in both request types), so ten parties cost
one serialisation, not ten.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import grpc
import numpy as np

from fedcore import telemetry, tensors
from fedcore.crypto.paillier import EncryptedArray
from fedcore.proto import arbiter_pb2, party_pb2, vertical_pb2
from fedcore.rpc import ChannelPool, error_text

_TRAIN = "/fedsuite.v1.Party/Train"
_EVALUATE = "/fedsuite.v1.Party/Evaluate"


MAX_CHUNKS_IN_FLIGHT = 8
"""Chunk messages the coordinator holds in flight per direction, whatever the number of parties."""


class FlowGate:
    """Bounds the chunks in flight across all party streams, so memory does not grow with parties.

    gRPC buffers each stream's in-flight message; with fifty streams that is fifty
    megabytes. A stream must hold a slot to send a chunk or to read and add one, so at
    most ``slots`` chunks are in flight each way; the others wait under HTTP/2 flow
    control. (A party that stalls mid-stream holds its slot until the round deadline.)
    """

    def __init__(self, slots: int = MAX_CHUNKS_IN_FLIGHT) -> None:
        self._send = threading.BoundedSemaphore(slots)
        self._receive = threading.BoundedSemaphore(slots)

    def paced(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield ``chunks``, each holding a send slot until gRPC asks for the next one (the write completed)."""
        for chunk in chunks:
            with self._send:
                yield chunk

    def responses(self, call: Iterable[party_pb2.TrainResponse]) -> Iterator[party_pb2.TrainResponse]:
        """Yield a Train stream's responses; after the first (awaited without a slot, as the party
        may still be training) each is read and processed while holding a receive slot."""
        stream = iter(call)
        first = next(stream, None)
        if first is None:
            return
        yield first
        while True:
            with self._receive:
                response = next(stream, None)
                if response is None:
                    return
                yield response


def serialise_global_chunks(weights: Sequence[np.ndarray]) -> list[bytes]:
    """The weights as serialised ``TrainRequest``/``EvaluateRequest`` chunk messages."""
    return [party_pb2.TrainRequest(global_chunk=c).SerializeToString() for c in tensors.iter_chunks(weights)]


class PartyClient:
    """Typed calls to party (and arbiter) servers, over the coordinator's mTLS channels."""

    def __init__(self, channels: ChannelPool, gate: FlowGate | None = None) -> None:
        self._channels = channels
        self.gate = gate or FlowGate()

    def describe_data(self, address: str, job_id: str, dataset: str, timeout_s: float) -> grpc.Future:
        """Ask for the dataset's statistics; a cancellable future of the DescribeDataResponse."""
        channel = self._channels.get(address)
        call = channel.unary_unary(
            "/fedsuite.v1.Party/DescribeData",
            request_serializer=party_pb2.DescribeDataRequest.SerializeToString,
            response_deserializer=party_pb2.DescribeDataResponse.FromString,
        )
        return call.future(party_pb2.DescribeDataRequest(job_id=job_id, dataset=dataset), timeout=timeout_s)

    def train(
        self, address: str, task: party_pb2.TrainTask, global_chunks: Sequence[bytes], timeout_s: float
    ) -> Iterator[party_pb2.TrainResponse]:
        """Open a Train stream; the returned call iterates responses and can be cancelled."""
        call = self._channels.get(address).stream_stream(
            _TRAIN, request_serializer=None, response_deserializer=party_pb2.TrainResponse.FromString
        )
        return call(_with_task(party_pb2.TrainRequest(task=task), self.gate.paced(global_chunks)), timeout=timeout_s)

    def evaluate(
        self, address: str, task: party_pb2.TrainTask, global_chunks: Sequence[bytes], timeout_s: float
    ) -> grpc.Future:
        """Stream the global model for scoring; a cancellable future of the EvaluateResponse."""
        call = self._channels.get(address).stream_unary(
            _EVALUATE, request_serializer=None, response_deserializer=party_pb2.EvaluateResponse.FromString
        )
        return call.future(_with_task(party_pb2.EvaluateRequest(task=task), self.gate.paced(global_chunks)),
                           timeout=timeout_s)


    def run_vertical(
        self, address: str, service: str, task: vertical_pb2.VerticalTask, timeout_s: float
    ) -> Iterator[vertical_pb2.VerticalProgress]:
        """Start a node's part of a vertical job (``service``: Party or Arbiter); a cancellable stream."""
        call = self._channels.get(address).unary_stream(
            f"/fedsuite.v1.{service}/RunVertical",
            request_serializer=vertical_pb2.VerticalTask.SerializeToString,
            response_deserializer=vertical_pb2.VerticalProgress.FromString,
        )
        return call(task, timeout=timeout_s)

    def create_key(self, address: str, job_id: str, key_bits: int, timeout_s: float) -> bytes:
        """The arbiter's Paillier modulus n for the job (created on first call)."""
        call = self._channels.get(address).unary_unary(
            "/fedsuite.v1.Arbiter/CreateKey",
            request_serializer=arbiter_pb2.CreateKeyRequest.SerializeToString,
            response_deserializer=arbiter_pb2.PublicKey.FromString,
        )
        return call(arbiter_pb2.CreateKeyRequest(job_id=job_id, key_bits=key_bits), timeout=timeout_s).n

    def release_key(self, address: str, job_id: str, timeout_s: float) -> None:
        """Have the arbiter forget the job's key pair (the job ended). Never raises: the job's end must
        not depend on the arbiter, which frees an unused key by itself after its key_idle_ttl_s."""
        call = self._channels.get(address).unary_unary(
            "/fedsuite.v1.Arbiter/ReleaseKey",
            request_serializer=arbiter_pb2.ReleaseKeyRequest.SerializeToString,
            response_deserializer=arbiter_pb2.ReleaseKeyResponse.FromString,
        )
        try:
            released = call(arbiter_pb2.ReleaseKeyRequest(job_id=job_id), timeout=timeout_s).released
        except grpc.RpcError as err:
            telemetry.get_logger().warning("key_release_failed", job_id=job_id, reason=error_text(err))
            return
        telemetry.get_logger().info("key_released", job_id=job_id, held=released)

    def decrypt_sum(
        self, address: str, header: arbiter_pb2.DecryptSumHeader, sums: Sequence[EncryptedArray], timeout_s: float
    ) -> list[np.ndarray]:
        """Have the arbiter decrypt aggregated updates; the plaintext sums come back as float64 vectors."""
        call = self._channels.get(address).stream_stream(
            "/fedsuite.v1.Arbiter/DecryptSum",
            request_serializer=arbiter_pb2.DecryptSumRequest.SerializeToString,
            response_deserializer=arbiter_pb2.DecryptSumResponse.FromString,
        )
        requests = [arbiter_pb2.DecryptSumRequest(header=header),
                    *(arbiter_pb2.DecryptSumRequest(chunk=c) for c in tensors.iter_ciphertext_chunks(sums))]
        specs = [tensors.TensorSpec((int(n),), np.dtype("<f8")) for n in header.lengths]
        return tensors.assemble((r.chunk for r in call(iter(requests), timeout=timeout_s)), specs)


def _with_task(first: party_pb2.TrainRequest | party_pb2.EvaluateRequest, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield first.SerializeToString()
    yield from chunks

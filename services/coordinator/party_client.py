"""The coordinator's calls to parties: every one with a deadline.

The Train and Evaluate streams send the global weights as bytes serialised once per
round (``global_chunk`` has field number 2 in both request types), so ten parties cost
one serialisation, not ten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from fedcore import tensors
from fedcore.proto import party_pb2
from fedcore.rpc import ChannelPool

_TRAIN = "/fedsuite.v1.Party/Train"
_EVALUATE = "/fedsuite.v1.Party/Evaluate"


def serialise_global_chunks(weights: Sequence[np.ndarray]) -> list[bytes]:
    """The weights as serialised ``TrainRequest``/``EvaluateRequest`` chunk messages."""
    return [party_pb2.TrainRequest(global_chunk=c).SerializeToString() for c in tensors.iter_chunks(weights)]


class PartyClient:
    """Typed calls to party servers, over the coordinator's mTLS channels."""

    def __init__(self, channels: ChannelPool) -> None:
        self._channels = channels

    def describe_data(self, address: str, job_id: str, dataset: str, timeout_s: float) -> party_pb2.DescribeDataResponse:
        channel = self._channels.get(address)
        call = channel.unary_unary(
            "/fedsuite.v1.Party/DescribeData",
            request_serializer=party_pb2.DescribeDataRequest.SerializeToString,
            response_deserializer=party_pb2.DescribeDataResponse.FromString,
        )
        return call(party_pb2.DescribeDataRequest(job_id=job_id, dataset=dataset), timeout=timeout_s)

    def train(
        self, address: str, task: party_pb2.TrainTask, global_chunks: Sequence[bytes], timeout_s: float
    ) -> Iterator[party_pb2.TrainResponse]:
        """Open a Train stream; the returned call iterates responses and can be cancelled."""
        call = self._channels.get(address).stream_stream(
            _TRAIN, request_serializer=None, response_deserializer=party_pb2.TrainResponse.FromString
        )
        return call(_with_task(party_pb2.TrainRequest(task=task), global_chunks), timeout=timeout_s)

    def evaluate(
        self, address: str, task: party_pb2.TrainTask, global_chunks: Sequence[bytes], timeout_s: float
    ) -> party_pb2.EvaluateResponse:
        call = self._channels.get(address).stream_unary(
            _EVALUATE, request_serializer=None, response_deserializer=party_pb2.EvaluateResponse.FromString
        )
        return call(_with_task(party_pb2.EvaluateRequest(task=task), global_chunks), timeout=timeout_s)


def _with_task(first: party_pb2.TrainRequest | party_pb2.EvaluateRequest, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield first.SerializeToString()
    yield from chunks



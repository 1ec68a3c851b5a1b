"""The production transport of :class:`fedcore.federation.FederationContext`: gRPC over mTLS.

Each ``put`` is one ``Federation.Exchange`` call to the destination node, carrying the
encoded message in chunks of at most 1 MiB (so no message-size limit is ever hit), with
a deadline (the step timeout), retried within it while the destination has not opened the
job yet: the receiver refuses such a call at once rather than hold a worker for it. The receiver learns the sender from the sender's certificate, never from the
message, so a node cannot speak for another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping

import grpc

from fedcore import telemetry
from fedcore.federation import Cancelled, PeerUnavailable
from fedcore.proto import vertical_pb2
from fedcore.rpc import ChannelPool, error_text
from fedcore.tensors import CHUNK_BYTES

EXCHANGE = "/fedsuite.v1.Federation/Exchange"
FIRST_RETRY_S, MAX_RETRY_S = 0.02, 0.5
"""Backoff of a send that found the job not yet open at its destination, within the step deadline."""


def exchange_chunks(job_id: str, tag: str, payload: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[vertical_pb2.ExchangeChunk]:
    """One message as a stream of chunks (an empty message is one empty chunk)."""
    view = memoryview(payload)
    for offset in range(0, max(len(payload), 1), chunk_bytes):
        yield vertical_pb2.ExchangeChunk(job_id=job_id, tag=tag, data=bytes(view[offset : offset + chunk_bytes]),
                                         total_bytes=len(payload))


class GrpcTransport:
    """Sends to the peers of one job, whose addresses the coordinator handed out."""

    def __init__(self, channels: ChannelPool, peers: Mapping[str, str], timeout_s: float,
                 cancelled: threading.Event | None = None) -> None:
        self._channels = channels
        self._peers = dict(peers)
        self._timeout_s = timeout_s
        self._cancelled = cancelled or threading.Event()

    def send(self, job_id: str, tag: str, src: str, dst: str, payload: bytes) -> None:
        address = self._peers.get(dst)
        if address is None:
            raise PeerUnavailable(f"{dst} is not a peer of job {job_id}")
        call = self._channels.get(address, peer=dst).stream_unary(  # the server must be dst, by certificate
            EXCHANGE,
            request_serializer=vertical_pb2.ExchangeChunk.SerializeToString,
            response_deserializer=vertical_pb2.ExchangeAck.FromString,
        )
        deadline = time.monotonic() + self._timeout_s
        delay = FIRST_RETRY_S
        while True:
            try:
                call(exchange_chunks(job_id, tag, payload), timeout=max(deadline - time.monotonic(), 0.0))
                break
            except grpc.RpcError as err:
                # NOT_FOUND: dst has not opened the job yet (its task may start after ours); it never waits for it
                if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() + delay >= deadline:  # type: ignore[attr-defined]
                    raise PeerUnavailable(f"{dst} did not accept {tag!r}: {error_text(err)}") from err
            if self._cancelled.wait(delay):
                raise Cancelled(f"job {job_id} was cancelled while {tag!r} waited for {dst} to open it")
            delay = min(delay * 2, MAX_RETRY_S)
        telemetry.COMMUNICATION_BYTES.labels(direction="sent", peer=dst).inc(len(payload))

"""The receiving end of node-to-node messages, shared by parties and the arbiter.

``Federation.Exchange`` takes one message (in chunks) from a peer: the sender is the
caller's certificate name, and only nodes the coordinator named as participants of a
job running here may send to it. Messages land in the node's mailbox, where the
algorithm's ``ctx.get`` finds them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from fedcore import telemetry
from fedcore.federation.mailbox import Mailbox
from fedcore.proto import vertical_pb2, vertical_pb2_grpc
from fedcore.rpc import abort, peer_identity

MAX_MESSAGE_BYTES = 1 << 30
"""Largest single federation message (1 GiB): bounds what a peer can make us buffer."""

POLICY = {"/fedsuite.v1.Federation/Exchange": frozenset({"party", "arbiter"})}


@dataclass
class ActiveJobs:
    """Exchange ids of the vertical jobs running on this node, with their participants."""

    _participants: dict[str, frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, exchange_id: str, participants: frozenset[str]) -> None:
        with self._lock:
            self._participants[exchange_id] = participants

    def close(self, exchange_id: str) -> None:
        with self._lock:
            self._participants.pop(exchange_id, None)

    def running(self) -> list[str]:
        """Exchange ids of the jobs open here now."""
        with self._lock:
            return sorted(self._participants)

    def participants(self, exchange_id: str) -> frozenset[str] | None:
        """The job's participants, or None if it is not open here now. Never waits: a call for a job
        that is not open gives its worker thread back at once (a peer that sent before this node's
        task started retries, within its step deadline: fedcore.federation.grpc_transport)."""
        with self._lock:
            return self._participants.get(exchange_id)


class FederationServicer(vertical_pb2_grpc.FederationServicer):
    """Thin: authenticate the sender, bound the size, reassemble, deliver."""

    def __init__(self, mailbox: Mailbox, jobs: ActiveJobs, insecure: bool = False) -> None:
        self._mailbox = mailbox
        self._jobs = jobs
        self._insecure = insecure

    def Exchange(self, request_iterator: Iterator[vertical_pb2.ExchangeChunk], context: grpc.ServicerContext) -> vertical_pb2.ExchangeAck:
        identity = peer_identity(context, self._insecure)
        sender = identity.name if identity else ""
        first = next(request_iterator, None)
        if first is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "empty exchange stream")
        participants = self._jobs.participants(first.job_id)
        if participants is None:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no vertical job {first.job_id!r} is open here")
        elif sender not in participants:
            abort(context, grpc.StatusCode.PERMISSION_DENIED, f"{sender} is not a participant of job {first.job_id}")
        if first.total_bytes > MAX_MESSAGE_BYTES:
            abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"message of {first.total_bytes} bytes exceeds {MAX_MESSAGE_BYTES}")
        payload = bytearray(first.data)
        for chunk in request_iterator:
            if (chunk.job_id, chunk.tag, chunk.total_bytes) != (first.job_id, first.tag, first.total_bytes):
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, "chunks of one message must share job_id, tag and total_bytes")
            payload += chunk.data
            if len(payload) > first.total_bytes:
                abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"message {first.tag!r} overruns its {first.total_bytes} bytes")
        if len(payload) != first.total_bytes:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                          f"message {first.tag!r} ended at {len(payload)} of {first.total_bytes} bytes")
        try:
            self._mailbox.deliver(first.job_id, first.tag, sender, bytes(payload))
        except ValueError as err:
            abort(context, grpc.StatusCode.ALREADY_EXISTS, str(err))
        telemetry.COMMUNICATION_BYTES.labels(direction="received", peer=sender).inc(len(payload))
        return vertical_pb2.ExchangeAck(messages=1)

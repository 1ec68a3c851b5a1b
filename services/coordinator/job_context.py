"""What a running job may use, and how it ends: shared by the horizontal and vertical drivers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import grpc

from fedcore import telemetry
from fedcore.audit import AuditLog
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.coordinator.party_client import PartyClient
from fedsuite.coordinator.registry import PartyRegistry
from fedsuite.coordinator.store import CheckpointStore, SqliteStore

EventSink = Callable[[pb.JobEvent], None]


class JobFailed(Exception):
    """The job cannot go on; the message is the reason shown to people."""


class JobCancelled(Exception):
    """CancelJob was called."""


@dataclass
class JobContext:
    """What a running job may use: state, parties, the clock and its cancel flag."""

    job_id: str
    store: SqliteStore
    checkpoints: CheckpointStore
    registry: PartyRegistry
    parties: PartyClient
    executor: Executor
    emit: EventSink
    cancelled: threading.Event
    call_timeout_s: float
    log: telemetry.structlog.typing.FilteringBoundLogger
    arbiter: tuple[str, str] | None = None
    """(node id, address) of the arbiter, for jobs that need one."""
    audit: AuditLog | None = None
    """Where rounds and decryption requests are recorded."""
    _calls: set[grpc.Call] = field(default_factory=set)
    _calls_lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, kind: int, round_number: int = 0, **fields: object) -> None:
        self.emit(pb.JobEvent(job_id=self.job_id, type=kind, round=round_number, **fields))  # type: ignore[arg-type]

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    def track(self, call: grpc.Call) -> None:
        with self._calls_lock:
            self._calls.add(call)
        if self.cancelled.is_set():
            call.cancel()

    def untrack(self, call: grpc.Call) -> None:
        with self._calls_lock:
            self._calls.discard(call)

    def cancel_calls(self) -> None:
        with self._calls_lock:
            for call in list(self._calls):
                call.cancel()

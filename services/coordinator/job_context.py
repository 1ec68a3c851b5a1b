"""What a running job may use, and how it ends: shared by the horizontal and vertical drivers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedcore import telemetry
from fedcore.audit import AuditLog
from fedcore.proto import coordinator_pb2 as pb
from fedcore.rpc import error_text

from fedsuite.coordinator.party_client import PartyClient
from fedsuite.coordinator.registry import PartyRegistry
from fedsuite.coordinator.store import CheckpointStore, SqliteStore

EventSink = Callable[[pb.JobEvent], None]


def audit_round(audit: AuditLog, store: SqliteStore, job_id: str, metrics: pb.RoundMetrics, recovered: bool) -> None:
    """Record a committed round in the audit log (``recovered``: written after a crash lost it)."""
    fields = {"recovered": True} if recovered else {}
    audit.record("round_committed", job_id=job_id, round=metrics.round, parties=list(metrics.parties), **fields)
    store.mark_audited(job_id, metrics.round)


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
    notify: Callable[[], None] = lambda: None
    """Wakes the job's watchers after an event was stored by the store itself (a round's commit)."""
    _calls: dict[grpc.Call, str] = field(default_factory=dict)
    _calls_lock: threading.Lock = field(default_factory=threading.Lock)
    _lost: dict[str, str] = field(default_factory=dict)
    _waiting_for: str = ""

    def event(self, kind: int, round_number: int = 0, **fields: object) -> None:
        self.emit(pb.JobEvent(job_id=self.job_id, type=kind, round=round_number, **fields))  # type: ignore[arg-type]

    def audit_round(self, metrics: pb.RoundMetrics) -> None:
        """The committed round's audit record, then the store's mark that it is written."""
        if self.audit is not None:
            audit_round(self.audit, self.store, self.job_id, metrics, recovered=False)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled()

    # -- state the job shows while it waits for parties --------------------------------
    def waiting(self, reason: str, pending: bool) -> None:
        """The job waits for parties: say so once per reason (a WAITING event), and be PENDING if it has
        not started rounds yet, so that GetJob and `job watch` show what it waits for."""
        if reason == self._waiting_for:
            return
        self._waiting_for = reason
        if pending:
            self.store.set_state(self.job_id, pb.JOB_STATE_PENDING, reason)
        self.event(pb.JOB_EVENT_TYPE_WAITING, message=reason)
        self.log.info("job_waiting", reason=reason)

    def running(self) -> None:
        """The parties are there: the job is RUNNING."""
        self._waiting_for = ""
        self.store.set_state(self.job_id, pb.JOB_STATE_RUNNING)

    # -- calls in flight, cancelled when the job is or when their party goes offline ---
    def track(self, call: grpc.Call, party_id: str = "") -> None:
        with self._calls_lock:
            self._calls[call] = party_id
        if self.cancelled.is_set():
            call.cancel()

    def untrack(self, call: grpc.Call) -> None:
        with self._calls_lock:
            self._calls.pop(call, None)

    def cancel_calls(self) -> None:
        with self._calls_lock:
            for call in list(self._calls):
                call.cancel()

    def party_lost(self, party_id: str, reason: str) -> None:
        """``party_id`` went offline: cancel its calls now rather than wait for their deadlines."""
        with self._calls_lock:
            self._lost[party_id] = reason
            calls = [c for c, p in self._calls.items() if p == party_id]
        for call in calls:
            call.cancel()

    def party_back(self, party_id: str) -> None:
        with self._calls_lock:
            self._lost.pop(party_id, None)

    def gather(self, futures: Mapping[str, grpc.Future]) -> tuple[dict[str, Any], dict[str, str]]:
        """Each party's reply, or why there is none: ({party: reply}, {party: reason}).

        The calls are tracked, so a party that goes offline ends its wait at once.
        """
        for party_id, future in futures.items():
            self.track(future, party_id)  # type: ignore[arg-type]
        replies: dict[str, Any] = {}
        failures: dict[str, str] = {}
        try:
            for party_id, future in futures.items():
                try:
                    replies[party_id] = future.result()
                except (grpc.RpcError, grpc.FutureCancelledError) as err:
                    failures[party_id] = self.lost_reason(party_id) or error_text(err)
        finally:
            for future in futures.values():
                self.untrack(future)  # type: ignore[arg-type]
        return replies, failures

    def lost_reason(self, party_id: str) -> str | None:
        """Why the party's calls were cancelled, if they were because it went offline."""
        with self._calls_lock:
            return self._lost.get(party_id)

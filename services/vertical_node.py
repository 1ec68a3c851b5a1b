"""What parties and the arbiter share to play their role in a vertical job.

A node's part of a job runs inside one ``RunVertical`` call from the coordinator.
:class:`VerticalNode` opens the job to its peers (so their Exchange calls are
accepted), builds the federation context over gRPC, and cancels the algorithm's waits
the moment the coordinator cancels the call (another node failed, or the job was
cancelled).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from fedcore.federation import Cancelled, FederationContext, PeerTimeout, PeerUnavailable
from fedcore.federation.grpc_transport import GrpcTransport
from fedcore.federation.mailbox import Mailbox
from fedcore.proto import vertical_pb2, vertical_pb2_grpc
from fedcore.rpc import ChannelPool, service

from fedsuite.exchange import ActiveJobs, FederationServicer

DEFAULT_STEP_TIMEOUT_S = 60.0

_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (PeerTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (PeerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (KeyError, grpc.StatusCode.NOT_FOUND),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(error: Exception) -> grpc.StatusCode:
    """The gRPC status a failed vertical step is reported with."""
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class VerticalNode:
    """One node's vertical sessions: mailbox, open jobs and channels to peers."""

    def __init__(self, node_id: str, channels: ChannelPool, mailbox: Mailbox, jobs: ActiveJobs) -> None:
        self.node_id = node_id
        self._channels = channels
        self._mailbox = mailbox
        self._jobs = jobs

    @contextmanager
    def session(self, task: vertical_pb2.VerticalTask, call: grpc.ServicerContext) -> Iterator[FederationContext]:
        """A federation context for ``task``; peers may send to us only while it is open."""
        participants = frozenset({task.guest, *task.hosts, task.arbiter} - {"", self.node_id})
        timeout_s = task.step_timeout_s or DEFAULT_STEP_TIMEOUT_S
        cancelled = threading.Event()
        call.add_callback(cancelled.set)
        transport = GrpcTransport(self._channels, task.peers, timeout_s)
        self._jobs.open(task.job_id, participants)
        try:
            yield FederationContext(task.job_id, self.node_id, transport, self._mailbox, timeout_s, cancelled)
        finally:
            self._jobs.close(task.job_id)
            self._mailbox.drop_job(task.job_id)


class VerticalEndpoint:
    """Everything a party or the arbiter needs to take part in vertical jobs: its mailbox, the
    jobs open to peers, the ``Federation`` servicer peers send to, and the :class:`VerticalNode`."""

    def __init__(self, node_id: str, channels: ChannelPool, insecure: bool) -> None:
        self.mailbox = Mailbox(node_id)
        self.active_jobs = ActiveJobs()
        self.node = VerticalNode(node_id, channels, self.mailbox, self.active_jobs)
        self.registration = service(vertical_pb2_grpc.add_FederationServicer_to_server,
                                    FederationServicer(self.mailbox, self.active_jobs, insecure),
                                    "fedsuite.v1.Federation")

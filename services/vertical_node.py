"""What parties and the arbiter share to play their role in a vertical job.

A node's part of a job runs inside one ``RunVertical`` call from the coordinator.
:class:`VerticalNode` opens the job to its peers (so their Exchange calls are
accepted), builds the federation context over gRPC, cancels the algorithm's waits
the moment the coordinator cancels the call (another node failed, or the job was
cancelled), and streams the progress the algorithm reports while it runs.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import grpc

from fedcore.federation import Cancelled, FederationContext, PeerTimeout, PeerUnavailable
from fedcore.federation.grpc_transport import GrpcTransport
from fedcore.federation.mailbox import Mailbox
from fedcore.proto import vertical_pb2, vertical_pb2_grpc
from fedcore.rpc import ChannelPool, service

from fedsuite.exchange import ActiveJobs, FederationServicer
from fedsuite.translate import seconds

DEFAULT_STEP_TIMEOUT_S = 60.0

Report = Callable[[vertical_pb2.VerticalProgress], None]
"""How a node's work reports progress to the coordinator while it runs."""
Work = Callable[[FederationContext, Report], vertical_pb2.VerticalResult]

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


def summary(metrics: Mapping[str, float]) -> str:
    """A guest's evaluation in a few words: ``auc=0.9934 ks=0.9312``."""
    return " ".join(f"{key}={metrics[key]:.4f}" for key in ("auc", "ks") if key in metrics)


def job_label(task: vertical_pb2.VerticalTask) -> str:
    """The coordinator's job id of a task (its ``job_id`` is the exchange id ``<job id>.<run>``), for metric labels."""
    return task.job_id.partition(".")[0]


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
        timeout_s = seconds(task.step_timeout) or DEFAULT_STEP_TIMEOUT_S
        cancelled = threading.Event()
        call.add_callback(cancelled.set)
        transport = GrpcTransport(self._channels, task.peers, timeout_s, cancelled)
        self._jobs.open(task.job_id, participants)
        try:
            yield FederationContext(task.job_id, self.node_id, transport, self._mailbox, timeout_s, cancelled)
        finally:
            self._jobs.close(task.job_id)
            self._mailbox.drop_job(task.job_id)

    def stream(self, task: vertical_pb2.VerticalTask, call: grpc.ServicerContext, work: Work) -> Iterator[vertical_pb2.VerticalProgress]:
        """Run ``work`` in a session for ``task`` on its own thread, yielding each progress message it
        reports as it happens, then one with its result; an exception of ``work`` is raised here, in the
        call's thread, for the servicer to map to a status. (A servicer cannot yield from inside the
        algorithm.) The thread runs in a copy of this context, so its log lines keep the bound fields."""
        updates: queue.SimpleQueue[vertical_pb2.VerticalProgress | None] = queue.SimpleQueue()
        outcome: list[vertical_pb2.VerticalResult | Exception] = []

        def run() -> None:
            try:
                with self.session(task, call) as ctx:
                    outcome.append(work(ctx, updates.put))
            except Exception as err:  # raised again below, in the call's thread
                outcome.append(err)
            finally:
                updates.put(None)

        threading.Thread(target=contextvars.copy_context().run, args=(run,), name=f"vertical-{task.job_id}",
                         daemon=True).start()
        while (update := updates.get()) is not None:
            yield update
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        yield vertical_pb2.VerticalProgress(result=outcome[0])


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

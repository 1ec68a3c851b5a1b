"""Vertical jobs, driven from the coordinator (DESIGN.md, "Vertical").

The coordinator never touches a row, a ciphertext or a gradient here: it checks the
guest and hosts are online, hands every node its ``VerticalTask`` (role, peers and
their addresses, dataset, parameters) and follows their ``RunVertical`` streams. The
protocol itself runs node to node. The first node to fail fails the job, with that
node's id and reason, and the others are cancelled at once instead of waiting out
their timeouts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass

import grpc

from fedcore import telemetry
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.rpc import error_text

from fedsuite.coordinator.job_context import JobContext, JobFailed
from fedsuite.coordinator.specs import DEFAULT_STEP_TIMEOUT_S
from fedsuite.translate import duration, hetero_params, seconds
from fedsuite.vertical_node import summary

CALL_DEADLINE_S = 6 * 3600.0
"""Deadline of one node's RunVertical call; steps inside have their own, much shorter, timeouts."""


@dataclass(frozen=True)
class Node:
    """One participant of a vertical job, as the coordinator reaches it."""

    node_id: str
    role: int
    address: str
    method: str


class VerticalJob:
    """Trains a split logistic regression, or scores rows with one."""

    def __init__(self, ctx: JobContext, spec: pb.JobSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.arbiter = ctx.arbiter

    def run(self) -> vertical_pb2.VerticalResult:
        started = time.monotonic()
        train = self.spec.WhichOneof("kind") == "vertical"
        body = self.spec.vertical if train else self.spec.vertical_predict
        nodes = self.participants(body.guest, list(body.hosts), train, self.step_timeout_s)
        exchange_id = f"{self.ctx.job_id}.{uuid.uuid4().hex[:8]}"  # fresh per run: a restarted job never sees old messages
        self.ctx.store.set_progress(self.ctx.job_id, 0)  # a rerun (after a restart or a resume) trains from the start
        self.ctx.event(pb.JOB_EVENT_TYPE_STARTED, parties=[n.node_id for n in nodes], total_rounds=self.total_epochs,
                       message=f"{'training' if train else 'scoring'} with {', '.join(n.node_id for n in nodes)}")
        results = self._run_all(nodes, lambda node: self._task(node, nodes, exchange_id, train), train)
        guest = results[body.guest]
        if train:
            arbiter = results[self.arbiter[0]]  # type: ignore[index]
            guest.epochs, guest.converged = arbiter.epochs, arbiter.converged
            guest.losses[:] = arbiter.losses
            if guest.metrics:
                self.ctx.event(pb.JOB_EVENT_TYPE_PROGRESS, guest.epochs, total_rounds=self.total_epochs,
                               evaluation=dict(guest.metrics), message=f"{body.guest} evaluated the model on its "
                               f"{guest.intersection} aligned training rows: {summary(guest.metrics)}")
        telemetry.record_model_metrics(body.guest, self.ctx.job_id, guest.metrics)
        telemetry.record_global_metrics(self.ctx.job_id, guest.metrics)  # only the guest holds labels
        guest.duration.CopyFrom(duration(time.monotonic() - started))
        return guest

    @property
    def step_timeout_s(self) -> float:
        """The job's step_timeout in seconds (normalise() fills in the default; a job stored
        before step_timeout was a Duration has none)."""
        body = self.spec.vertical if self.spec.HasField("vertical") else self.spec.vertical_predict
        return seconds(body.step_timeout) or DEFAULT_STEP_TIMEOUT_S

    @property
    def total_epochs(self) -> int:
        """max_iter of a training job (it may stop earlier); 0 for a predict job."""
        return hetero_params(self.spec.vertical.params).max_iter if self.spec.HasField("vertical") else 0

    def participants(self, guest: str, hosts: list[str], train: bool, wait_s: float) -> list[Node]:
        """Guest, hosts (and the arbiter when training), waiting up to ``wait_s`` for them to be online."""
        deadline = time.monotonic() + wait_s
        wanted = [guest, *hosts]
        while True:
            self.ctx.check_cancelled()
            online = {p.party_id: p for p in self.ctx.registry.parties() if p.online}
            missing = [p for p in wanted if p not in online]
            if not missing:
                break
            absent = f"part{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} offline"
            if time.monotonic() >= deadline:
                raise JobFailed(f"{absent} for step_timeout_s={wait_s:g} s")
            self.ctx.waiting(f"waiting up to step_timeout_s={wait_s:g} s: {absent}", pending=True)
            time.sleep(0.2)
        self.ctx.running()
        nodes = [Node(guest, vertical_pb2.VERTICAL_ROLE_GUEST, online[guest].address, "Party")]
        nodes += [Node(h, vertical_pb2.VERTICAL_ROLE_HOST, online[h].address, "Party") for h in hosts]
        if train:
            if self.arbiter is None:
                raise JobFailed("vertical training needs an arbiter: set `arbiter` (host:port) in the coordinator config")
            nodes.append(Node(self.arbiter[0], vertical_pb2.VERTICAL_ROLE_ARBITER, self.arbiter[1], "Arbiter"))
        return nodes

    def _task(self, node: Node, nodes: list[Node], exchange_id: str, train: bool) -> vertical_pb2.VerticalTask:
        body = self.spec.vertical if train else self.spec.vertical_predict
        task = vertical_pb2.VerticalTask(
            job_id=exchange_id, role=node.role, guest=body.guest, hosts=body.hosts,
            kind=vertical_pb2.VERTICAL_KIND_TRAIN if train else vertical_pb2.VERTICAL_KIND_PREDICT,
            peers={n.node_id: n.address for n in nodes if n.node_id != node.node_id},
            dataset=body.guest_dataset if node.role == vertical_pb2.VERTICAL_ROLE_GUEST else body.host_dataset,
            step_timeout=duration(self.step_timeout_s),
            model_id=body.model_id or self.ctx.job_id, model_version=body.model_version,
        )
        if train:
            task.arbiter = self.arbiter[0]  # type: ignore[index]
            task.params.CopyFrom(self.spec.vertical.params)
            if node.role == vertical_pb2.VERTICAL_ROLE_ARBITER:
                task.dataset = ""
        elif node.role == vertical_pb2.VERTICAL_ROLE_GUEST:
            task.scores_path = self.spec.vertical_predict.scores_path  # the hosts never learn where the scores go
        return task

    def _follow(self, stream: Iterator[vertical_pb2.VerticalProgress], train: bool) -> vertical_pb2.VerticalResult:
        """A node's stream to its end; the last message is the result. Each epoch the arbiter reports and
        each step a predict job's guest reports becomes a live event."""
        for progress in stream:
            if progress.HasField("result"):
                return progress.result
            if progress.step:
                self.ctx.event(pb.JOB_EVENT_TYPE_PROGRESS, progress.step, total_rounds=progress.total_steps,
                               message=progress.message)
                continue
            telemetry.TRAINING_LOSS.labels(job_id=self.ctx.job_id).set(progress.loss)
            self.ctx.store.set_progress(self.ctx.job_id, progress.epoch)
            self.ctx.event(pb.JOB_EVENT_TYPE_ROUND_COMMITTED, progress.epoch, total_rounds=self.total_epochs,
                           metrics=pb.RoundMetrics(round=progress.epoch, train_loss=progress.loss))
        raise RuntimeError("the node ended without a result")

    def _run_all(self, nodes: list[Node], task_for, train: bool) -> dict[str, vertical_pb2.VerticalResult]:  # type: ignore[no-untyped-def]
        calls: dict[str, grpc.Call] = {}
        futures: dict[Future[vertical_pb2.VerticalResult], Node] = {}
        for node in nodes:
            stream = self.ctx.parties.run_vertical(node.address, node.method, task_for(node), CALL_DEADLINE_S)
            calls[node.node_id] = stream  # type: ignore[assignment]
            self.ctx.track(stream, node.node_id)  # type: ignore[arg-type]
            futures[self.ctx.executor.submit(self._follow, stream, train)] = node
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for call in calls.values():
                    call.cancel()  # type: ignore[attr-defined]
                self.ctx.check_cancelled()
                first = min(failed, key=lambda f: _failure_order(f.exception()))
                node = futures[first]
                lost = next((n.node_id for n in nodes if self.ctx.lost_reason(n.node_id)), None)
                if lost is not None:
                    raise JobFailed(f"{self.ctx.lost_reason(lost)}; the job stopped")
                raise JobFailed(f"{node.node_id} ({vertical_pb2.VerticalRole.Name(node.role).removeprefix('VERTICAL_ROLE_').lower()}): "
                                f"{error_text(first.exception())}")  # type: ignore[arg-type]
            return {futures[f].node_id: f.result() for f in done}
        finally:
            for call in calls.values():
                self.ctx.untrack(call)


def where_the_model_is(job: pb.Job) -> str:
    """Why a vertical job has nothing to download, and what exists instead: one sentence for DownloadModel."""
    if job.spec.HasField("vertical_predict"):
        body = job.spec.vertical_predict
        kept = f" (its scores stay on {body.guest}, in scores/{body.scores_path})" if body.scores_path else ""
        return (f"job {job.job_id} is a vertical_predict job: it scored rows with model {body.model_id!r} and "
                f"trained no model{kept}")
    body, version = job.spec.vertical, job.vertical_result.model_version
    model_id = body.model_id or job.job_id
    saved = f"version {version!r}" if version else "the version training saves when it succeeds"
    return (f"job {job.job_id} trained a split model that no single node holds: guest {body.guest} keeps its "
            f"coefficients and intercept and each host ({', '.join(body.hosts)}) its coefficients, as model "
            f"{model_id!r} {saved} in its state_dir; to score rows, submit a vertical_predict job with "
            f"model_id: {model_id} (README, \"Using a model\")")


def _failure_order(error: BaseException | None) -> int:
    """Report the root cause, not the echoes: a node's own error before peers' timeouts or cancellations."""
    code = error.code() if isinstance(error, grpc.Call) else None  # type: ignore[union-attr]
    return {grpc.StatusCode.CANCELLED: 3, grpc.StatusCode.DEADLINE_EXCEEDED: 2, grpc.StatusCode.UNAVAILABLE: 1}.get(code, 0)  # type: ignore[arg-type]

"""The Coordinator gRPC servicer: validate, translate, delegate; map domain errors to status codes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import grpc

from fedcore import tensors
from fedcore.audit import Head
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import coordinator_pb2_grpc
from fedcore.rpc import abort, peer_identity

from fedsuite.coordinator.admission import JobRefused
from fedsuite.coordinator.jobs import JobManager, JobStateError
from fedsuite.coordinator.registry import AddressTaken, PartyRegistry, UnknownParty
from fedsuite.coordinator.specs import SpecError
from fedsuite.coordinator.vertical import where_the_model_is
from fedsuite.coordinator.store import CheckpointStore, JobNotFound
from fedsuite.translate import duration

PARTY_METHODS = frozenset({"RegisterParty", "Heartbeat"})
ADMIN_METHODS = frozenset({"ListParties", "SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob", "DownloadModel",
                           "ResumeJob"})
POLICY = {
    **{f"/fedsuite.v1.Coordinator/{m}": frozenset({"party"}) for m in PARTY_METHODS},
    **{f"/fedsuite.v1.Coordinator/{m}": frozenset({"admin"}) for m in ADMIN_METHODS},
}
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-_]{1,253}:\d{1,5}$|^\[[0-9a-fA-F:]{2,39}\]:\d{1,5}$")
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$")
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
MAX_DATASETS = 64
"""Datasets one party may declare: bounds a registration (and a ListParties page) to kilobytes."""
MAX_ROWS = 10**12
MAX_FEATURES = 1_000_000
MAX_ORGANISATION = 200
PAGE_SIZE, MAX_PAGE_SIZE = 100, 500


def registration_problem(request: pb.RegisterPartyRequest) -> str | None:
    """What is wrong with a registration (its party_id aside), in one sentence, or None: every field is
    bounded, so no party can make the registry, ListParties or the audit log grow by more than kilobytes."""
    if request.role not in (common_pb2.PARTY_ROLE_GUEST, common_pb2.PARTY_ROLE_HOST):
        return "role must be PARTY_ROLE_GUEST or PARTY_ROLE_HOST"
    if not _ADDRESS.match(request.address):
        return f"address {request.address[:80]!r} is not host:port"
    if len(request.organisation) > MAX_ORGANISATION:
        return f"organisation is {len(request.organisation)} characters; at most {MAX_ORGANISATION}"
    if len(request.datasets) > MAX_DATASETS:
        return f"{len(request.datasets)} datasets declared; at most {MAX_DATASETS}"
    names = [d.name for d in request.datasets]
    if len(set(names)) != len(names):
        return "dataset names must be unique"
    for d in request.datasets:
        if not _DATASET.match(d.name):
            return f"dataset name {d.name[:80]!r} is not valid (1-128 letters, digits, '.', '_', '-')"
        if not (0 <= d.n_rows <= MAX_ROWS and 0 <= d.n_eval_rows <= MAX_ROWS):
            return f"dataset {d.name!r}: n_rows and n_eval_rows must be in 0..{MAX_ROWS}"
        if not 0 <= d.n_features <= MAX_FEATURES:
            return f"dataset {d.name!r}: n_features must be in 0..{MAX_FEATURES}"
    return None


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    """Thin: every method checks its input and calls the registry or the job manager."""

    def __init__(self, registry: PartyRegistry, jobs: JobManager, checkpoints: CheckpointStore,
                 heartbeat_interval_s: float, insecure: bool, audit_head: Callable[[], Head]) -> None:
        self._registry = registry
        self._audit_head = audit_head
        self._jobs = jobs
        self._checkpoints = checkpoints
        self._heartbeat_interval_s = heartbeat_interval_s
        self._insecure = insecure

    def _caller_is(self, context: grpc.ServicerContext, party_id: str) -> None:
        identity = peer_identity(context, self._insecure)
        if identity is None or identity.name != party_id:
            caller = identity.name if identity else "an unknown caller"
            abort(context, grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not speak for party {party_id!r}")

    def RegisterParty(self, request: pb.RegisterPartyRequest, context: grpc.ServicerContext) -> pb.RegisterPartyResponse:
        if not _PARTY_ID.match(request.party_id):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                  f"party_id {request.party_id[:80]!r} is not a valid id (1-63 letters, digits, '.', '_', '-')")
        self._caller_is(context, request.party_id)
        problem = registration_problem(request)
        if problem is not None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            self._registry.register(
                pb.PartyInfo(party_id=request.party_id, role=request.role, organisation=request.organisation,
                             address=request.address, datasets=request.datasets)
            )
        except AddressTaken as err:
            abort(context, grpc.StatusCode.ALREADY_EXISTS, str(err))
        return pb.RegisterPartyResponse(heartbeat_interval=duration(self._heartbeat_interval_s), audit_head=self._head())

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        self._caller_is(context, request.party_id)
        try:
            self._registry.heartbeat(request.party_id)
        except UnknownParty:
            abort(context, grpc.StatusCode.NOT_FOUND, f"party {request.party_id!r} is not registered; call RegisterParty")
        return pb.HeartbeatResponse(known=True, audit_head=self._head())

    def _head(self) -> common_pb2.AuditHead:
        records, digest = self._audit_head()
        return common_pb2.AuditHead(records=records, hash=digest)

    def ListParties(self, request: pb.ListPartiesRequest, context: grpc.ServicerContext) -> pb.ListPartiesResponse:
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be in 0..{MAX_PAGE_SIZE}")
        size = request.page_size or PAGE_SIZE
        after = [p for p in self._registry.parties() if p.party_id > request.page_token]  # sorted by id
        page = after[:size]
        return pb.ListPartiesResponse(parties=page, next_page_token=page[-1].party_id if len(after) > size else "")

    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        try:
            return pb.SubmitJobResponse(job_id=self._jobs.submit(request.spec))
        except SpecError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except JobRefused as err:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        try:
            return self._jobs.get(request.job_id)
        except JobNotFound:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        if request.limit < 0:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "limit must be >= 0")
        return pb.ListJobsResponse(jobs=self._jobs.list(min(request.limit or 100, 1000)))

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        try:
            return self._jobs.cancel(request.job_id)
        except JobNotFound:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        except JobStateError as err:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def ResumeJob(self, request: pb.ResumeJobRequest, context: grpc.ServicerContext) -> pb.Job:
        try:
            return self._jobs.resume(request.job_id)
        except JobNotFound:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        except (JobStateError, JobRefused) as err:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        try:
            self._jobs.get(request.job_id)
        except JobNotFound:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        yield from self._jobs.watch(request.job_id, still_wanted=context.is_active)

    def DownloadModel(self, request: pb.DownloadModelRequest, context: grpc.ServicerContext) -> Iterator[pb.DownloadModelResponse]:
        try:
            job = self._jobs.get(request.job_id)
            info = self._jobs.model_info(request.job_id)
        except JobNotFound:
            abort(context, grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        if info is None:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"job {request.job_id} has no model yet"
                  if job.spec.HasField("horizontal") else where_the_model_is(job))
        info.round, weights = self._checkpoints.load_latest(
            request.job_id, lambda: self._jobs.get(request.job_id).current_round)
        yield pb.DownloadModelResponse(info=info)
        for chunk in tensors.iter_chunks(weights):
            yield pb.DownloadModelResponse(chunk=chunk)

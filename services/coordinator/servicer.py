"""The Coordinator gRPC servicer: validate, translate, delegate; map domain errors to status codes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc

from fedcore import tensors
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import coordinator_pb2_grpc
from fedcore.rpc import abort, peer_identity

from fedsuite.coordinator.admission import JobRefused
from fedsuite.coordinator.jobs import JobManager, JobStateError
from fedsuite.coordinator.registry import PartyRegistry, UnknownParty
from fedsuite.coordinator.specs import SpecError
from fedsuite.coordinator.vertical import where_the_model_is
from fedsuite.coordinator.store import CheckpointStore, JobNotFound

PARTY_METHODS = frozenset({"RegisterParty", "Heartbeat"})
ADMIN_METHODS = frozenset({"ListParties", "SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob", "DownloadModel",
                           "ResumeJob"})
POLICY = {
    **{f"/fedsuite.v1.Coordinator/{m}": frozenset({"party"}) for m in PARTY_METHODS},
    **{f"/fedsuite.v1.Coordinator/{m}": frozenset({"admin"}) for m in ADMIN_METHODS},
}
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-_]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$")


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    """Thin: every method checks its input and calls the registry or the job manager."""

    def __init__(self, registry: PartyRegistry, jobs: JobManager, checkpoints: CheckpointStore,
                 heartbeat_interval_s: float, insecure: bool) -> None:
        self._registry = registry
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
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"party_id {request.party_id!r} is not a valid id")
        self._caller_is(context, request.party_id)
        if request.role not in (common_pb2.PARTY_ROLE_GUEST, common_pb2.PARTY_ROLE_HOST):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "role must be PARTY_ROLE_GUEST or PARTY_ROLE_HOST")
        if not _ADDRESS.match(request.address):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"address {request.address!r} is not host:port")
        names = [d.name for d in request.datasets]
        if len(set(names)) != len(names) or any(not n or d.n_rows < 0 for n, d in zip(names, request.datasets)):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "datasets must have unique non-empty names and n_rows >= 0")
        self._registry.register(
            pb.PartyInfo(party_id=request.party_id, role=request.role, organisation=request.organisation,
                         address=request.address, datasets=request.datasets)
        )
        return pb.RegisterPartyResponse(heartbeat_interval_s=self._heartbeat_interval_s)

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        self._caller_is(context, request.party_id)
        try:
            self._registry.heartbeat(request.party_id)
        except UnknownParty:
            abort(context, grpc.StatusCode.NOT_FOUND, f"party {request.party_id!r} is not registered; call RegisterParty")
        return pb.HeartbeatResponse(known=True)

    def ListParties(self, request: pb.ListPartiesRequest, context: grpc.ServicerContext) -> pb.ListPartiesResponse:
        return pb.ListPartiesResponse(parties=self._registry.parties())

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

"""The operator's client of the coordinator, with a deadline on every call.

The CLI, the demo and the tests all go through this one client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedcore import tensors
from fedcore.ml.models import build_model
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import coordinator_pb2_grpc
from fedcore.rpc import make_channel
from fedcore.tls import Identity, TlsFiles

from fedsuite.translate import model_config


@dataclass(frozen=True)
class DownloadedModel:
    """A job's global model and what is needed to use it."""

    info: pb.ModelInfo
    weights: list[np.ndarray]


class CoordinatorAdmin:
    """Admin calls: jobs and parties."""

    def __init__(self, target: str, tls: TlsFiles | None, timeout_s: float = 10.0, name: str = "admin",
                 coordinator_id: str = "coordinator") -> None:
        # the server must be the coordinator by certificate, whatever address reaches it (an IP needs no SAN)
        self._channel = make_channel(target, tls, Identity(name, "admin"), peer=coordinator_id)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CoordinatorAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, spec: pb.JobSpec) -> str:
        return self._stub.SubmitJob(pb.SubmitJobRequest(spec=spec), timeout=self.timeout_s).job_id

    def get(self, job_id: str) -> pb.Job:
        return self._stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout_s)

    def list(self, limit: int = 100) -> list[pb.Job]:
        return list(self._stub.ListJobs(pb.ListJobsRequest(limit=limit), timeout=self.timeout_s).jobs)

    def cancel(self, job_id: str) -> pb.Job:
        return self._stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=self.timeout_s)

    def resume(self, job_id: str) -> pb.Job:
        return self._stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id), timeout=self.timeout_s)

    def parties(self) -> list[pb.PartyInfo]:
        """Every registered party, page by page."""
        parties: list[pb.PartyInfo] = []
        token = ""
        while True:
            page = self._stub.ListParties(pb.ListPartiesRequest(page_token=token), timeout=self.timeout_s)
            parties.extend(page.parties)
            if not page.next_page_token:
                return parties
            token = page.next_page_token

    def watch(self, job_id: str, timeout_s: float = 24 * 3600) -> Iterator[pb.JobEvent]:
        """The job's events until it ends; the deadline bounds the whole watch."""
        yield from self._stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=timeout_s)

    def wait(self, job_id: str, timeout_s: float) -> pb.Job:
        """Follow the job until it ends (or the deadline passes), then return it."""
        for _ in self.watch(job_id, timeout_s):
            pass
        return self.get(job_id)

    def download_model(self, job_id: str) -> DownloadedModel:
        stream = self._stub.DownloadModel(pb.DownloadModelRequest(job_id=job_id), timeout=max(self.timeout_s, 60))
        first = next(stream)
        info = first.info
        weights = tensors.assemble(
            (m.chunk for m in stream),
            [tensors.TensorSpec(tuple(s), np.dtype("<f4")) for s in _shapes(info)],
        )
        return DownloadedModel(info, weights)


def _shapes(info: pb.ModelInfo) -> list[tuple[int, ...]]:
    return [tuple(s) for s in build_model(model_config(info.model, info.n_features, info.n_classes)).shapes()]

"""The party's half of vertical jobs: guest or host, train or predict, on its own rows."""

from __future__ import annotations

import time

import numpy as np

from fedcore.federation import FederationContext
from fedcore.proto import vertical_pb2
from fedcore.vertical.hetero_lr import (
    GuestModel, HostModel, evaluate_binary, fit_guest, fit_host, predict_guest, predict_host,
)

from fedsuite.party.models import ModelStore
from fedsuite.party.work import LocalWork, TaskMismatch
from fedsuite.translate import hetero_params


class VerticalParty:
    """Plays guest (labels) or host (features only) against its datasets and model store."""

    def __init__(self, work: LocalWork, models: ModelStore) -> None:
        self._work = work
        self._models = models

    def _rows(self, task: vertical_pb2.VerticalTask, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        data = self._work.dataset(task.dataset)
        if data.ids is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no id column; vertical jobs align rows by id")
        if need_labels and data.y is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no label column; the guest must hold the labels")
        return data.X, data.y, [str(i) for i in data.ids]

    def train(self, task: vertical_pb2.VerticalTask, ctx: FederationContext) -> vertical_pb2.VerticalResult:
        params = hetero_params(task.params)
        started = time.monotonic()
        model_id = task.model_id or task.job_id
        self._models.check_new(model_id, task.model_version)  # before any work: a named version is never overwritten
        if task.role == vertical_pb2.VERTICAL_ROLE_GUEST:
            X, y, ids = self._rows(task, need_labels=True)
            guest_model, report = fit_guest(ctx, params, X, y, ids, list(task.hosts), task.arbiter)
            version = self._models.save(model_id, {"role": "guest", **guest_model.to_dict()}, task.model_version)
        else:
            X, _, ids = self._rows(task, need_labels=False)
            host_model, report = fit_host(ctx, params, X, ids, task.guest, task.arbiter)
            version = self._models.save(model_id, {"role": "host", **host_model.to_dict()}, task.model_version)
        return vertical_pb2.VerticalResult(
            epochs=report.epochs, converged=report.converged, losses=report.losses, intersection=report.intersection,
            align_seconds=report.align_seconds, model_id=model_id, model_version=version,
            seconds=time.monotonic() - started,
        )

    def predict(self, task: vertical_pb2.VerticalTask, ctx: FederationContext) -> vertical_pb2.VerticalResult:
        started = time.monotonic()
        version, document = self._models.load(task.model_id, task.model_version)
        result = vertical_pb2.VerticalResult(model_id=task.model_id, model_version=version)
        if task.role == vertical_pb2.VERTICAL_ROLE_GUEST:
            if document.get("role") != "guest":
                raise TaskMismatch(f"model {task.model_id} v{version} on this party is a host model")
            X, y, ids = self._rows(task, need_labels=False)
            rows, p = predict_guest(ctx, GuestModel.from_dict(document), X, ids, list(task.hosts))
            if y is not None and len(rows):
                result.metrics.update(evaluate_binary(y[rows], p))
            result.n_scored = len(rows)
        else:
            if document.get("role") != "host":
                raise TaskMismatch(f"model {task.model_id} v{version} on this party is a guest model")
            X, _, ids = self._rows(task, need_labels=False)
            result.n_scored = predict_host(ctx, HostModel.from_dict(document), X, ids, task.guest)
        result.seconds = time.monotonic() - started
        return result

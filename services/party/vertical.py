"""The party's half of vertical jobs: guest or host, train or predict, on its own rows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fedcore import telemetry
from fedcore.federation import FederationContext
from fedcore.proto import vertical_pb2
from fedcore.vertical.alignment import Alignment
from fedcore.vertical.hetero_lr import (
    EpochDone, GuestModel, HostModel, evaluate_binary, fit_guest, fit_host, predict_guest, predict_host,
)

from fedsuite.party.models import ModelStore
from fedsuite.party.work import LocalWork, TaskMismatch
from fedsuite.predict import checked_scores_path, write_scores
from fedsuite.translate import duration, hetero_params, predict_steps
from fedsuite.vertical_node import Report, job_label, summary


def _observe_epoch(done: EpochDone) -> None:
    telemetry.ROUND_DURATION.observe(done.seconds)


class VerticalParty:
    """Plays guest (labels) or host (features only) against its datasets, model store and scores directory."""

    def __init__(self, work: LocalWork, models: ModelStore, scores_dir: Path) -> None:
        self._work = work
        self._models = models
        self.scores_dir = scores_dir
        """Where this party's scores files go (vertical and horizontal predict jobs alike)."""

    def _rows(self, task: vertical_pb2.VerticalTask, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        data = self._work.dataset(task.dataset)
        if data.ids is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no id column; vertical jobs align rows by id")
        if need_labels and data.y is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no label column; the guest must hold the labels")
        return data.X, data.y, [str(i) for i in data.ids]

    def train(self, task: vertical_pb2.VerticalTask, ctx: FederationContext, report: Report) -> vertical_pb2.VerticalResult:
        """Train this side's half and save it; the guest's result carries the train metrics of the whole model."""
        params = hetero_params(task.params)
        started = time.monotonic()
        model_id = task.model_id or task.job_id
        self._models.check_new(model_id, task.model_version)  # before any work: a named version is never overwritten
        if task.role == vertical_pb2.VERTICAL_ROLE_GUEST:
            X, y, ids = self._rows(task, need_labels=True)
            guest_model, outcome = fit_guest(ctx, params, X, y, ids, list(task.hosts), task.arbiter,
                                             on_epoch=_observe_epoch)
            version = self._models.save(model_id, {"role": "guest", **guest_model.to_dict()}, task.model_version)
            telemetry.record_model_metrics(ctx.party_id, job_label(task), outcome.metrics)
        else:
            X, _, ids = self._rows(task, need_labels=False)
            host_model, outcome = fit_host(ctx, params, X, ids, task.guest, task.arbiter, on_epoch=_observe_epoch)
            version = self._models.save(model_id, {"role": "host", **host_model.to_dict()}, task.model_version)
        return vertical_pb2.VerticalResult(
            epochs=outcome.epochs, converged=outcome.converged, losses=outcome.losses,
            intersection=outcome.intersection, align_duration=duration(outcome.align_seconds),
            model_id=model_id,
            model_version=version, metrics=outcome.metrics,
            duration=duration(time.monotonic() - started),
        )

    def predict(self, task: vertical_pb2.VerticalTask, ctx: FederationContext, report: Report) -> vertical_pb2.VerticalResult:
        """Score the aligned rows; the guest reports its steps as it goes and keeps the scores to itself
        (in the CSV ``task.scores_path`` names, if any): only their evaluation leaves it."""
        started = time.monotonic()
        version, document = self._models.load(task.model_id, task.model_version)
        result = vertical_pb2.VerticalResult(model_id=task.model_id, model_version=version)
        if task.role == vertical_pb2.VERTICAL_ROLE_GUEST:
            if document.get("role") != "guest":
                raise TaskMismatch(f"model {task.model_id} v{version} on this party is a host model")
            scores_file = self.scores_dir / checked_scores_path(task.scores_path) if task.scores_path else None
            X, y, ids = self._rows(task, need_labels=False)
            steps = predict_steps(scores_file is not None)

            def step(number: int, message: str) -> None:
                report(vertical_pb2.VerticalProgress(step=number, total_steps=steps, message=message))

            def aligned(alignment: Alignment) -> None:
                step(1, f"aligned {alignment.size} rows with {', '.join(task.hosts)}")

            rows, p = predict_guest(ctx, GuestModel.from_dict(document), X, ids, list(task.hosts), on_aligned=aligned)
            if y is not None and len(rows):
                result.metrics.update(evaluate_binary(y[rows], p))
                telemetry.record_model_metrics(ctx.party_id, job_label(task), result.metrics)
            result.n_scored = len(rows)
            step(2, f"scored {len(rows)} rows" + (f": {summary(result.metrics)}" if result.metrics else ""))
            if scores_file is not None:
                self._write_scores(scores_file, [ids[r] for r in rows], p, None if y is None else y[rows])
                result.scores_path = task.scores_path
                step(3, f"wrote {len(rows)} scores to {task.scores_path} on {ctx.party_id}")
        else:
            if document.get("role") != "host":
                raise TaskMismatch(f"model {task.model_id} v{version} on this party is a guest model")
            X, _, ids = self._rows(task, need_labels=False)
            result.n_scored = predict_host(ctx, HostModel.from_dict(document), X, ids, task.guest)
        result.duration.CopyFrom(duration(time.monotonic() - started))
        return result

    @staticmethod
    def _write_scores(path: Path, ids: list[str], scores: np.ndarray, labels: np.ndarray | None) -> None:
        columns: dict[str, list[object]] = {"id": list(ids), "score": scores.tolist()}
        if labels is not None:
            columns["label"] = labels.tolist()
        try:
            write_scores(path, columns)
        except OSError as err:
            raise TaskMismatch(f"cannot write the scores to {path}: {err.strerror or err}") from None

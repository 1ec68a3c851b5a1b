"""The Party gRPC servicer: reads the task and weights off the stream, delegates to LocalWork."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import NoReturn

import grpc
import numpy as np

from fedcore.rpc import abort
from fedcore import telemetry, tensors
from fedcore.ml.models import Model, check_weights
from fedcore.crypto.paillier import PublicKey
from fedcore.federation import FederationError
from fedcore.proto import common_pb2, party_pb2, party_pb2_grpc, vertical_pb2

from fedsuite.party.models import ModelExists, ModelNotFound
from fedsuite.party.vertical import VerticalParty
from fedsuite.party.work import LocalWork, Task, TaskMismatch, UnknownDataset, encrypted_update
from fedsuite.translate import model_config, train_config
from fedsuite.vertical_node import VerticalNode, status_for

POLICY = {
    f"/fedsuite.v1.Party/{m}": frozenset({"coordinator"})
    for m in ("DescribeData", "Train", "Evaluate", "RunVertical")
}

_ERRORS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UnknownDataset, grpc.StatusCode.NOT_FOUND),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (ModelExists, grpc.StatusCode.ALREADY_EXISTS),
    (TaskMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),  # includes TensorStreamError
)


def _abort(context: grpc.ServicerContext, err: Exception) -> NoReturn:
    """End the call with the status a domain error maps to (a KeyError's message is its first arg)."""
    for kind, code in _ERRORS:
        if isinstance(err, kind):
            abort(context, code, str(err.args[0]) if err.args else str(err))
    raise err


@functools.lru_cache(maxsize=16)
def _paillier_key(n: bytes) -> PublicKey:
    """One PublicKey per job key, so its short-exponent obfuscator table is built once, not every round."""
    return PublicKey.from_n(n)


def _task(message: party_pb2.TrainTask) -> Task:
    if not message.job_id:
        raise ValueError("task.job_id is empty")
    if message.n_classes < 2:
        raise ValueError(f"task.n_classes must be >= 2 (got {message.n_classes})")
    mean = np.asarray(message.feature_mean, dtype=np.float64) if message.feature_mean else None
    scale = np.asarray(message.feature_scale, dtype=np.float64) if message.feature_scale else None
    encryption = (_paillier_key(message.paillier_n), message.paillier_exponent) if message.paillier_n else None
    return Task(
        job_id=message.job_id, round=message.round, dataset=message.dataset,
        model=model_config(message.model, message.n_features, message.n_classes),
        train=train_config(message), feature_mean=mean, feature_scale=scale, encryption=encryption,
        all_rows=message.all_rows, scores_path=message.scores_path,
    )


class PartyServicer(party_pb2_grpc.PartyServicer):
    """Thin: validation and translation only; the work is LocalWork's."""

    def __init__(self, work: LocalWork, node_id: str, vertical: VerticalParty, node: VerticalNode) -> None:
        self._work = work
        self._node_id = node_id
        self._vertical = vertical
        self._node = node

    def DescribeData(self, request: party_pb2.DescribeDataRequest, context: grpc.ServicerContext) -> party_pb2.DescribeDataResponse:
        try:
            stats = self._work.statistics(request.dataset)
        except UnknownDataset as err:
            _abort(context, err)
        return party_pb2.DescribeDataResponse(
            n_rows=stats.n_rows, n_features=stats.n_features, feature_sum=stats.feature_sum.tolist(),
            feature_sum_sq=stats.feature_sum_sq.tolist(), class_labels=stats.class_labels,
        )

    def _receive(self, requests: Iterator[party_pb2.TrainRequest] | Iterator[party_pb2.EvaluateRequest]) -> tuple[Task, Model, list[np.ndarray]]:
        first = next(requests, None)
        if first is None or not first.HasField("task"):
            raise ValueError("the stream must start with a task")
        task = _task(first.task)
        model, _ = self._work.check(task)
        specs = [tensors.TensorSpec(tuple(shape), np.dtype("<f4")) for shape in model.shapes()]
        weights = tensors.assemble((_global_chunk(r) for r in requests), specs)  # checks shapes and finiteness
        telemetry.COMMUNICATION_BYTES.labels(direction="received", peer="coordinator").inc(tensors.nbytes(weights))
        return task, model, weights

    def Train(self, request_iterator: Iterator[party_pb2.TrainRequest], context: grpc.ServicerContext) -> Iterator[party_pb2.TrainResponse]:
        try:
            task, model, weights = self._receive(request_iterator)
            with telemetry.bind(job_id=task.job_id, round=task.round, party_id=self._node_id):
                started = time.monotonic()
                result = self._work.train(task, model, weights)
                telemetry.ROUND_DURATION.observe(time.monotonic() - started)
                try:
                    check_weights(model, result.weights)
                except ValueError as err:
                    raise TaskMismatch(f"local training diverged ({err}); lower the learning rate") from err
                telemetry.get_logger().info("trained", n_samples=result.n_samples, train_loss=result.train_loss)
        except (ValueError, KeyError) as err:
            _abort(context, err)
        yield party_pb2.TrainResponse(
            summary=party_pb2.UpdateSummary(job_id=task.job_id, round=task.round, n_samples=result.n_samples,
                                            train_loss=result.train_loss)
        )
        if task.encryption is None:
            chunks = tensors.iter_chunks(result.weights)
        else:
            chunks = tensors.iter_ciphertext_chunks(encrypted_update(result, *task.encryption))
        for chunk in chunks:
            yield party_pb2.TrainResponse(update_chunk=chunk)
        telemetry.COMMUNICATION_BYTES.labels(direction="sent", peer="coordinator").inc(tensors.nbytes(result.weights))

    def Evaluate(self, request_iterator: Iterator[party_pb2.EvaluateRequest], context: grpc.ServicerContext) -> party_pb2.EvaluateResponse:
        try:
            task, model, weights = self._receive(request_iterator)
            metrics, written = self._work.evaluate(task, model, weights, self._vertical.scores_dir)
        except (ValueError, KeyError) as err:
            _abort(context, err)
        except OSError as err:
            abort(context, grpc.StatusCode.INTERNAL, f"{self._node_id} could not write its scores: {err.strerror or err}")
        return party_pb2.EvaluateResponse(
            metrics=common_pb2.EvalMetrics(loss=metrics.loss, accuracy=metrics.accuracy, auc=metrics.auc,
                                           n_samples=metrics.n_samples),
            rows_written=written,
        )


    def RunVertical(self, request: vertical_pb2.VerticalTask, context: grpc.ServicerContext) -> Iterator[vertical_pb2.VerticalProgress]:
        if request.role not in (vertical_pb2.VERTICAL_ROLE_GUEST, vertical_pb2.VERTICAL_ROLE_HOST):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a party plays VERTICAL_ROLE_GUEST or VERTICAL_ROLE_HOST")
        run = {vertical_pb2.VERTICAL_KIND_TRAIN: self._vertical.train,
               vertical_pb2.VERTICAL_KIND_PREDICT: self._vertical.predict}.get(request.kind)
        if run is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "kind must be VERTICAL_KIND_TRAIN or VERTICAL_KIND_PREDICT")
        with telemetry.bind(job_id=request.job_id, party_id=self._node_id):
            try:
                yield from self._node.stream(request, context, lambda ctx, report: run(request, ctx, report))
            except FederationError as err:
                telemetry.get_logger().warning("vertical_failed", reason=str(err))
                abort(context, status_for(err), f"{self._node_id}: {err}")
            except (ValueError, KeyError) as err:
                _abort(context, err)


def _global_chunk(request: party_pb2.TrainRequest | party_pb2.EvaluateRequest) -> tensors.tensor_pb2.TensorChunk:
    if not request.HasField("global_chunk"):
        raise tensors.TensorStreamError("only weight chunks may follow the task")
    return request.global_chunk

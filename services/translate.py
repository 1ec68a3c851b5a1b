"""Translation between the wire (fedsuite.v1 messages) and fedcore's plain configs.

Kept in one place so the coordinator and the party read a task the same way.
"""

from __future__ import annotations

from fedcore.ml.models import ModelConfig
from fedcore.ml.training import TrainConfig
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import party_pb2, vertical_pb2
from fedcore.vertical.params import HeteroLRParams

MODEL_TYPES = {
    pb.MODEL_TYPE_LOGISTIC_REGRESSION: "logistic_regression",
    pb.MODEL_TYPE_MLP: "mlp",
    pb.MODEL_TYPE_VECTOR: "vector",
}
PENALTIES = {pb.PENALTY_UNSPECIFIED: "none", pb.PENALTY_NONE: "none", pb.PENALTY_L2: "l2", pb.PENALTY_L1: "l1"}


def model_config(model: pb.ModelSpec, n_features: int, n_classes: int) -> ModelConfig:
    """The fedcore model a spec describes; ValueError for an unknown type."""
    if model.type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model.type}")
    return ModelConfig(
        type=MODEL_TYPES[model.type],
        n_features=n_features,
        n_classes=n_classes,
        hidden_units=tuple(model.hidden_units),
        vector_size=model.vector_size,
    )


def train_config(task: party_pb2.TrainTask) -> TrainConfig:
    """Local training settings of a task."""
    return TrainConfig(
        local_epochs=task.local_epochs,
        batch_size=task.batch_size,
        learning_rate=task.learning_rate,
        penalty=PENALTIES[task.penalty],
        alpha=task.alpha,
        seed=task.seed,
    )


def hetero_params(message: vertical_pb2.HeteroLRParams) -> HeteroLRParams:
    """FATE-style parameters: the fields set on the wire over FATE's defaults (ValueError names a bad field)."""
    values = {field.name: value for field, value in message.ListFields()}
    return HeteroLRParams.from_dict(values)

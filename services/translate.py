"""Translation between the wire (fedsuite.v1 messages) and fedcore's plain configs.

Kept in one place so the coordinator and the party read a task the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from fedcore.ml.models import ModelConfig
from fedcore.ml.training import TrainConfig
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import common_pb2, party_pb2, vertical_pb2
from fedcore.vertical.params import EARLY_STOPS, INIT_METHODS, OPTIMIZERS
from fedcore.vertical.params import PENALTIES as FATE_PENALTIES
from fedcore.vertical.params import HeteroLRParams

MODEL_TYPES = {
    pb.MODEL_TYPE_LOGISTIC_REGRESSION: "logistic_regression",
    pb.MODEL_TYPE_MLP: "mlp",
    pb.MODEL_TYPE_VECTOR: "vector",
}
PENALTIES = {common_pb2.PENALTY_UNSPECIFIED: "none", common_pb2.PENALTY_NONE: "none", common_pb2.PENALTY_L2: "l2",
             common_pb2.PENALTY_L1: "l1"}
"""Horizontal jobs' penalty (unset: none) -> fedcore.ml's name."""
HETERO_ENUMS = {"penalty": FATE_PENALTIES, "optimizer": OPTIMIZERS, "early_stop": EARLY_STOPS,
                "init_method": INIT_METHODS}
"""HeteroLRParams' enum fields -> fedcore.vertical's (FATE's) spellings; the enum value is the upper-case
spelling after the enum's prefix (PENALTY_L2 is "L2", OPTIMIZER_RMSPROP is "rmsprop")."""


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
    """FATE-style parameters: the fields set on the wire over fedsuite's defaults, each enum as FATE spells
    it (UNSPECIFIED: the default); ValueError names a bad field and what it takes."""
    values = {field.name: fate_spelling(field.name, value) if field.name in HETERO_ENUMS else value
              for field, value in message.ListFields()}
    return HeteroLRParams.from_dict(values)


def fate_spelling(name: str, number: int) -> str:
    """The FATE spelling of value ``number`` of HeteroLRParams' enum field ``name``; ValueError for a number
    the enum does not have."""
    enum = vertical_pb2.HeteroLRParams.DESCRIPTOR.fields_by_name[name].enum_type
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    by_upper = {spelling.upper(): spelling for spelling in HETERO_ENUMS[name]}
    value = enum.values_by_number.get(number)
    if value is None or value.name.removeprefix(prefix) not in by_upper:
        allowed = ", ".join(prefix + spelling for spelling in by_upper)
        raise ValueError(f"{name}: must be one of {allowed} (got {number})")
    return by_upper[value.name.removeprefix(prefix)]


def predict_steps(writes_scores: bool) -> int:
    """Steps of a vertical predict job's guest: align, score and, with a scores file, write it."""
    return 3 if writes_scores else 2


def seconds(value: Duration) -> float:
    """A Duration in seconds (0 when unset)."""
    return value.ToNanoseconds() / 1e9


def duration(value: float) -> Duration:
    """``value`` seconds as a Duration."""
    result = Duration()
    result.FromNanoseconds(round(value * 1e9))
    return result


def timestamp(unix: float) -> Timestamp:
    """A Unix time in seconds as a Timestamp."""
    result = Timestamp()
    result.FromNanoseconds(round(unix * 1e9))
    return result


def unix(value: Timestamp) -> float:
    """A Timestamp as a Unix time in seconds."""
    return value.ToNanoseconds() / 1e9


def utc(value: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=value.ToMicroseconds())


"""Job specs: defaults for unset fields and validation that names the offending field.

Validation happens at submit time on the coordinator, so a job from any client
(the CLI, grpcurl, another language) is refused before it starts, with INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.model_versions import LATEST, check_version
from fedsuite.predict import checked_scores_path
from fedsuite.translate import duration, hetero_params, predict_steps, seconds

MAX_ROUNDS = 100_000
MAX_VECTOR_SIZE = 1 << 31
DEFAULT_MAX_ABS_WEIGHT = 1e6
"""No trained weight of a linear model or MLP comes near this; 3e38 (float32's edge) is an attack or a bug."""
DEFAULT_MAX_PARTY_WEIGHT = 0.5
"""No party's FedAvg weight outweighs all the others' together, whatever row count it declares."""
DEFAULT_ROUND_TIMEOUT_S = 120.0
DEFAULT_STEP_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 86_400.0
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SpecError(ValueError):
    """A job spec field is missing or out of range; the message names the field."""


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SpecError(f"{field} {message}")


def normalise(spec: pb.JobSpec) -> pb.JobSpec:
    """A validated copy of ``spec`` with defaults filled in."""
    kind = spec.WhichOneof("kind")
    _require(kind is not None, "spec", "must set one job kind: horizontal, vertical, vertical_predict or "
                                       "horizontal_predict")
    result = pb.JobSpec()
    result.CopyFrom(spec)
    _check_enums(result, "")
    if kind == "horizontal":
        _normalise_horizontal(result.horizontal)
    elif kind == "vertical":
        _normalise_parties(result.vertical, "vertical.")
        try:
            hetero_params(result.vertical.params)
        except ValueError as err:
            raise SpecError(f"vertical.params.{err}") from err
        _require(_ID.match(result.vertical.model_id) is not None or not result.vertical.model_id,
                 "vertical.model_id", "must be letters, digits, '.', '_' or '-'")
        _check_version(result.vertical.model_version, "vertical.model_version")
    elif kind == "horizontal_predict":
        _normalise_horizontal_predict(result.horizontal_predict)
    else:
        _normalise_parties(result.vertical_predict, "vertical_predict.")
        _require(bool(result.vertical_predict.model_id), "vertical_predict.model_id", "must name a trained model")
        if result.vertical_predict.model_version != LATEST:
            _check_version(result.vertical_predict.model_version, "vertical_predict.model_version")
        if result.vertical_predict.scores_path:
            try:
                checked_scores_path(result.vertical_predict.scores_path, "vertical_predict.scores_path")
            except ValueError as err:
                raise SpecError(str(err)) from err
    return result


def total_rounds(spec: pb.JobSpec) -> int:
    """What JobEvent.total_rounds says for a (normalised) job: its rounds, max_iter epochs or predict steps."""
    kind = spec.WhichOneof("kind")
    if kind == "horizontal":
        return spec.horizontal.rounds
    if kind == "vertical":
        return hetero_params(spec.vertical.params).max_iter
    if kind == "horizontal_predict":
        return 1  # one step: every party scores at once
    return predict_steps(bool(spec.vertical_predict.scores_path))


def _check_enums(message: Message, where: str) -> None:
    """Every enum field of ``message`` (recursively) holds a value its enum has: proto3 keeps unknown numbers."""
    for field, value in message.ListFields():
        path = where + field.name
        if field.type == FieldDescriptor.TYPE_ENUM and value not in field.enum_type.values_by_number:
            allowed = ", ".join(v.name for v in field.enum_type.values[1:])
            raise SpecError(f"{path} must be one of {allowed} (got {value})")
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name.startswith("fedsuite."):
            for item in value if field.is_repeated else [value]:
                _check_enums(item, path + ".")


def _timeout(value: Duration, default_s: float, field: str) -> None:
    """An unset or zero timeout takes ``default_s``; others must be in (0, MAX_TIMEOUT_S] seconds."""
    _require(0 <= seconds(value) <= MAX_TIMEOUT_S, field, f"must be in (0, {MAX_TIMEOUT_S:g}] s (got {seconds(value):g} s)")
    if not seconds(value):
        value.CopyFrom(duration(default_s))


def _check_version(version: str, field: str) -> None:
    """An unset version is fine (train: the next number; predict: the newest)."""
    if version:
        try:
            check_version(version)
        except ValueError as err:
            raise SpecError(f"{field} {err}") from err


def _normalise_parties(v: pb.VerticalJobSpec | pb.VerticalPredictSpec, f: str) -> None:
    _require(bool(v.guest), f + "guest", "must name the guest party")
    _require(len(v.hosts) >= 1, f + "hosts", "must name at least one host party")
    _require(len(set(v.hosts)) == len(v.hosts) and v.guest not in v.hosts, f + "hosts",
             "must be distinct parties other than the guest")
    _require(bool(v.guest_dataset), f + "guest_dataset", "must name the guest's dataset")
    _require(bool(v.host_dataset), f + "host_dataset", "must name the hosts' dataset")
    _timeout(v.step_timeout, DEFAULT_STEP_TIMEOUT_S, f + "step_timeout")


def _normalise_horizontal_predict(p: pb.HorizontalPredictSpec) -> None:
    f = "horizontal_predict."
    _require(bool(p.dataset.strip()), f + "dataset", "must name a dataset the parties hold")
    _require(_ID.match(p.model_job_id) is not None, f + "model_job_id", "must name the horizontal job whose model scores")
    _require(p.model_round >= 0, f + "model_round", f"must be 0 (the last committed round) or a round (got {p.model_round})")
    _require(len(set(p.parties)) == len(p.parties), f + "parties", "must not name a party twice")
    if not p.rows:
        p.rows = pb.PREDICT_ROWS_ALL
    if p.scores_path:
        try:
            checked_scores_path(p.scores_path, f + "scores_path")
        except ValueError as err:
            raise SpecError(str(err)) from err
    _timeout(p.timeout, DEFAULT_ROUND_TIMEOUT_S, f + "timeout")


def _normalise_horizontal(h: pb.HorizontalJobSpec) -> None:
    f = "horizontal."
    _require(bool(h.dataset.strip()), f + "dataset", "must name a dataset the parties hold")
    _normalise_model(h.model, f + "model.")
    h.rounds = h.rounds or 10
    _require(0 < h.rounds <= MAX_ROUNDS, f + "rounds", f"must be in 1..{MAX_ROUNDS} (got {h.rounds})")
    h.local_epochs = h.local_epochs or 1
    _require(0 < h.local_epochs <= 10_000, f + "local_epochs", f"must be in 1..10000 (got {h.local_epochs})")
    _require(h.batch_size >= 0, f + "batch_size", f"must be >= 0, 0 meaning the whole local set (got {h.batch_size})")
    h.learning_rate = h.learning_rate or 0.1
    _require(
        math.isfinite(h.learning_rate) and 0 < h.learning_rate <= 100,
        f + "learning_rate", f"must be in (0, 100] (got {h.learning_rate})",
    )
    if h.penalty == common_pb2.PENALTY_UNSPECIFIED:
        h.penalty = common_pb2.PENALTY_NONE
    _require(math.isfinite(h.alpha) and h.alpha >= 0, f + "alpha", f"must be >= 0 (got {h.alpha})")
    h.min_parties = h.min_parties or 2
    _require(0 < h.min_parties <= 10_000, f + "min_parties", f"must be in 1..10000 (got {h.min_parties})")
    h.fraction = h.fraction or 1.0
    _require(0 < h.fraction <= 1, f + "fraction", f"must be in (0, 1] (got {h.fraction})")
    _timeout(h.round_timeout, DEFAULT_ROUND_TIMEOUT_S, f + "round_timeout")
    if not h.HasField("max_round_retries"):
        h.max_round_retries = 2
    _require(0 <= h.max_round_retries <= 100, f + "max_round_retries", f"must be in 0..100 (got {h.max_round_retries})")
    if not h.HasField("standardize"):
        h.standardize = h.model.type != pb.MODEL_TYPE_VECTOR
    if not h.HasField("evaluate_every"):
        h.evaluate_every = 1
    if h.secure_aggregation == pb.SECURE_AGGREGATION_UNSPECIFIED:
        h.secure_aggregation = pb.SECURE_AGGREGATION_NONE
    if h.secure_aggregation == pb.SECURE_AGGREGATION_PAILLIER:
        h.key_bits = h.key_bits or 2048
        _require(h.key_bits in (1024, 2048, 3072), f + "key_bits", f"must be 1024, 2048 or 3072 (got {h.key_bits})")
        _require(h.min_parties >= 2, f + "min_parties",
                 "must be >= 2 with secure aggregation: the arbiter never decrypts a single party's update")
    else:
        _require(h.key_bits == 0, f + "key_bits", "applies to secure_aggregation: paillier only")
    _require(h.evaluate_every >= 0, f + "evaluate_every", f"must be >= 0 (got {h.evaluate_every})")
    _require(math.isfinite(h.max_update_norm) and h.max_update_norm >= 0, f + "max_update_norm",
             f"must be >= 0, 0 meaning no limit (got {h.max_update_norm})")
    _require(h.max_update_norm == 0 or h.secure_aggregation == pb.SECURE_AGGREGATION_NONE, f + "max_update_norm",
             "cannot be enforced with secure aggregation: the coordinator never sees a party's update")
    h.max_abs_weight = h.max_abs_weight or DEFAULT_MAX_ABS_WEIGHT
    _require(math.isfinite(h.max_abs_weight) and h.max_abs_weight > 0, f + "max_abs_weight",
             f"must be a positive finite number (got {h.max_abs_weight})")
    plaintext = h.secure_aggregation == pb.SECURE_AGGREGATION_NONE
    if not h.HasField("max_party_weight"):
        h.max_party_weight = DEFAULT_MAX_PARTY_WEIGHT if plaintext else 1.0
    _require(0 < h.max_party_weight <= 1, f + "max_party_weight", f"must be in (0, 1] (got {h.max_party_weight})")
    _require(h.max_party_weight == 1 or plaintext, f + "max_party_weight",
             "must be 1 with secure aggregation: each party weights its own encrypted update")


def _normalise_model(m: pb.ModelSpec, f: str) -> None:
    _require(m.type != pb.MODEL_TYPE_UNSPECIFIED, f + "type", "must be logistic_regression, mlp or vector")
    if m.type == pb.MODEL_TYPE_MLP:
        if not m.hidden_units:
            m.hidden_units.append(32)
        _require(
            all(0 < u <= 65_536 for u in m.hidden_units) and len(m.hidden_units) <= 8,
            f + "hidden_units", f"must be 1..8 layers of 1..65536 units (got {list(m.hidden_units)})",
        )
    else:
        _require(not m.hidden_units, f + "hidden_units", "applies to mlp models only")
    if m.type == pb.MODEL_TYPE_VECTOR:
        _require(
            0 < m.vector_size <= MAX_VECTOR_SIZE, f + "vector_size", f"must be in 1..{MAX_VECTOR_SIZE} (got {m.vector_size})"
        )
    else:
        _require(m.vector_size == 0, f + "vector_size", "applies to vector models only")

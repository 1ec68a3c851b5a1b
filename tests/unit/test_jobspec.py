"""Job files (fedsuite.jobfile) and job spec defaults and validation (fedsuite.coordinator.specs)."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.vertical.params import HeteroLRParams

from fedsuite.coordinator.specs import MAX_ROUNDS, SpecError, normalise
from fedsuite.jobfile import JobFileError, load_job_spec, parse_job_spec
from fedsuite.translate import duration, hetero_params, seconds

JOB_YAML = """
name: breast-lr
horizontal:
  dataset: breast
  model:
    type: logistic_regression
  penalty: l2
  alpha: 0.01
  rounds: 5
"""

MINIMAL: dict[str, Any] = {"horizontal": {"dataset": "breast", "model": {"type": "logistic_regression"}}}


def _job(**horizontal: Any) -> dict[str, Any]:
    """The minimal job with ``horizontal`` fields replaced (a None value removes the field)."""
    values = copy.deepcopy(MINIMAL)
    for key, value in horizontal.items():
        if value is None:
            values["horizontal"].pop(key, None)
        else:
            values["horizontal"][key] = value
    return values


def _normalised(**horizontal: Any) -> pb.HorizontalJobSpec:
    return normalise(parse_job_spec(_job(**horizontal))).horizontal


# -- job files -------------------------------------------------------------------------------


def test_load_job_file_with_short_enum_names(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    spec = load_job_spec(path)
    assert spec == pb.JobSpec(
        name="breast-lr",
        horizontal=pb.HorizontalJobSpec(
            dataset="breast",
            model=pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION),
            penalty=common_pb2.PENALTY_L2,
            alpha=0.01,
            rounds=5,
        ),
    )


@pytest.mark.parametrize(
    ("written", "model_type"),
    [
        ("logistic_regression", pb.MODEL_TYPE_LOGISTIC_REGRESSION),
        ("LOGISTIC_REGRESSION", pb.MODEL_TYPE_LOGISTIC_REGRESSION),
        ("MODEL_TYPE_LOGISTIC_REGRESSION", pb.MODEL_TYPE_LOGISTIC_REGRESSION),
        ("mlp", pb.MODEL_TYPE_MLP),
        ("model_type_mlp", pb.MODEL_TYPE_MLP),
        ("vector", pb.MODEL_TYPE_VECTOR),
        (3, pb.MODEL_TYPE_VECTOR),
    ],
)
def test_model_type_short_full_and_numeric(written: Any, model_type: int) -> None:
    assert parse_job_spec(_job(model={"type": written})).horizontal.model.type == model_type


@pytest.mark.parametrize(
    ("written", "penalty"),
    [("none", common_pb2.PENALTY_NONE), ("l2", common_pb2.PENALTY_L2), ("L1", common_pb2.PENALTY_L1), ("PENALTY_L2", common_pb2.PENALTY_L2)],
)
def test_penalty_short_and_full(written: str, penalty: int) -> None:
    assert parse_job_spec(_job(penalty=written)).horizontal.penalty == penalty


def test_unknown_enum_value_lists_the_choices() -> None:
    with pytest.raises(JobFileError, match=r"^horizontal\.model\.type: unknown value 'svm'; "
                                           r"choose one of logistic_regression, mlp, vector$"):
        parse_job_spec(_job(model={"type": "svm"}))
    with pytest.raises(JobFileError, match=r"^horizontal\.penalty: unknown value 'elastic'; choose one of none, l2, l1$"):
        parse_job_spec(_job(penalty="elastic"))


def test_unknown_keys_refused_by_name() -> None:
    with pytest.raises(JobFileError, match=r"^unknown key\(s\): horizontal\.epochs; horizontal takes alpha, batch_size, "):
        parse_job_spec(_job(epochs=3))
    with pytest.raises(JobFileError, match=r"^unknown key\(s\): horizontal\.model\.layers; "
                                           r"horizontal\.model takes hidden_units, type, vector_size$"):
        parse_job_spec(_job(model={"type": "mlp", "layers": [4]}))
    with pytest.raises(JobFileError, match=r"^unknown key\(s\): federated; the top level takes horizontal, "
                                           r"horizontal_predict, name, vertical, vertical_predict$"):
        parse_job_spec({"federated": {}})


def test_every_unknown_key_is_named_at_once_at_every_depth() -> None:
    values = _job(epochs=3, model={"type": "mlp", "layers": [4]}, rouns=5)
    values["nmae"] = "x"
    with pytest.raises(JobFileError) as caught:
        parse_job_spec(values)
    message = str(caught.value)
    assert message.startswith("unknown key(s): nmae, horizontal.epochs, horizontal.rouns, horizontal.model.layers; "
                              "the top level takes horizontal, horizontal_predict, name, vertical, vertical_predict; horizontal takes "), message
    assert message.endswith("; horizontal.model takes hidden_units, type, vector_size"), message
    with pytest.raises(JobFileError, match=r"^unknown key\(s\): vertical\.params\.init_param, vertical\.params\.lr; "
                                           r"vertical\.params takes alpha, batch_size, "):
        parse_job_spec({"vertical": {"params": {"lr": 0.1, "init_param": {"init_method": "zeros"}}}})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("rounds", "ten", "horizontal.rounds: expected an integer, got 'ten'"),
    ("rounds", 1.5, "horizontal.rounds: expected an integer, got 1.5"),
    ("rounds", True, "horizontal.rounds: expected an integer, got True"),
    ("rounds", 2**31, "horizontal.rounds: expected an integer in -2147483648..2147483647, got 2147483648"),
    ("learning_rate", "fast", "horizontal.learning_rate: expected a number, got 'fast'"),
    ("learning_rate", [0.1], "horizontal.learning_rate: expected a number, got [0.1]"),
    ("standardize", "yes", "horizontal.standardize: expected true or false, got 'yes'"),
    ("dataset", ["a"], "horizontal.dataset: expected a string, got ['a']"),
    ("model", "mlp", "horizontal.model: expected a mapping"),
    ("model", {"type": "mlp", "hidden_units": 8}, "horizontal.model.hidden_units: expected a list, got 8"),
    ("model", {"type": "mlp", "hidden_units": [8, "x"]}, "horizontal.model.hidden_units[1]: expected an integer, got 'x'"),
    ("penalty", 2.5, "horizontal.penalty: expected one of none, l2, l1, got 2.5"),
])
def test_values_of_the_wrong_type_refused_naming_the_path_and_type(field: str, value: Any, message: str) -> None:
    with pytest.raises(JobFileError) as caught:
        parse_job_spec(_job(**{field: value}))
    assert str(caught.value) == message
    with pytest.raises(JobFileError, match=r"^horizontal\.?: expected a mapping$"):
        parse_job_spec({"horizontal": ["breast"]})


def test_rounds_ten_in_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML.replace("rounds: 5", "rounds: ten"))
    with pytest.raises(JobFileError, match=r"^horizontal\.rounds: expected an integer, got 'ten'$"):
        load_job_spec(path)


def test_rounds_ten_through_the_real_cli_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML.replace("rounds: 5", "rounds: ten") + "  epochs: 3\n")
    run = subprocess.run([sys.executable, "-m", "fedsuite.cli", "job", "submit", str(path), "--coordinator",
                          "127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith("fedsuite: unknown key(s): horizontal.epochs; horizontal takes "), run.stderr
    path.write_text(JOB_YAML.replace("rounds: 5", "rounds: ten"))
    run = subprocess.run([sys.executable, "-m", "fedsuite.cli", "job", "submit", str(path), "--coordinator",
                          "127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stderr) == (2, "fedsuite: horizontal.rounds: expected an integer, got 'ten'\n")


def test_numbers_yaml_leaves_as_text_and_special_floats() -> None:
    h = parse_job_spec(_job(learning_rate="1e-05", alpha="NaN", round_timeout_s="2.5e1")).horizontal
    assert h.learning_rate == pytest.approx(1e-5) and math.isnan(h.alpha) and seconds(h.round_timeout) == 25.0
    with pytest.raises(JobFileError, match=r"^horizontal\.round_timeout_s: expected a number of seconds, got inf$"):
        parse_job_spec(_job(round_timeout_s="Infinity"))  # a Duration cannot be infinite


def test_two_job_kinds_refused() -> None:
    with pytest.raises(JobFileError, match=r"^job: set only one of horizontal, vertical, vertical_predict, "
                                           r"horizontal_predict \(got horizontal, vertical\)$"):
        parse_job_spec({**MINIMAL, "vertical": {"guest": "a"}})


def test_job_file_errors(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="job file not found: .*missing.yaml"):
        load_job_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("horizontal: {dataset: [unclosed\n")
    with pytest.raises(JobFileError, match="bad.yaml: not valid YAML"):
        load_job_spec(bad)
    for text in ["", "- horizontal\n", "just words\n"]:
        bad.write_text(text)
        with pytest.raises(JobFileError, match=r"^job: expected a mapping$"):
            load_job_spec(bad)


# -- defaults --------------------------------------------------------------------------------


def test_defaults_filled() -> None:
    h = _normalised()
    assert h.rounds == 10
    assert h.local_epochs == 1
    assert h.batch_size == 0
    assert h.learning_rate == pytest.approx(0.1)
    assert h.penalty == common_pb2.PENALTY_NONE
    assert h.alpha == 0.0
    assert h.min_parties == 2
    assert h.fraction == 1.0
    assert h.round_timeout == duration(120)
    assert h.HasField("max_round_retries") and h.max_round_retries == 2
    assert h.HasField("standardize") and h.standardize is True
    assert h.HasField("evaluate_every") and h.evaluate_every == 1
    assert h.HasField("max_party_weight") and h.max_party_weight == 0.5
    assert list(h.model.hidden_units) == [] and h.model.vector_size == 0
    assert _normalised(secure_aggregation="paillier").max_party_weight == 1.0  # parties weight their own updates


def test_normalise_copies() -> None:
    spec = parse_job_spec(_job())
    normalised = normalise(spec)
    assert normalised.horizontal.rounds == 10
    assert spec.horizontal.rounds == 0  # the caller's spec is untouched
    assert normalise(normalised) == normalised  # idempotent


def test_given_values_kept() -> None:
    h = _normalised(rounds=3, local_epochs=4, batch_size=32, learning_rate=0.5, penalty="l1", alpha=0.2,
                    min_parties=5, fraction=0.5, round_timeout_s=30, seed=7)
    assert (h.rounds, h.local_epochs, h.batch_size, h.min_parties, h.seed) == (3, 4, 32, 5, 7)
    assert (h.learning_rate, h.alpha, h.fraction, seconds(h.round_timeout)) == (0.5, 0.2, 0.5, 30.0)
    assert h.penalty == common_pb2.PENALTY_L1


def test_explicit_zeros_of_optional_fields_kept() -> None:
    h = _normalised(max_round_retries=0, evaluate_every=0, standardize=False)
    assert h.max_round_retries == 0
    assert h.evaluate_every == 0
    assert h.standardize is False


def test_fraction_zero_is_proto3_unset_and_defaults() -> None:
    # fraction is a plain proto3 double: an explicit 0 cannot be told from an unset field.
    assert parse_job_spec(_job(fraction=0)) == parse_job_spec(_job())
    assert _normalised(fraction=0).fraction == 1.0


def test_vector_models_not_standardized_by_default() -> None:
    h = _normalised(model={"type": "vector", "vector_size": 1000})
    assert h.model.vector_size == 1000
    assert h.HasField("standardize") and h.standardize is False
    assert _normalised(model={"type": "vector", "vector_size": 10}, standardize=True).standardize is True
    assert _normalised(model={"type": "mlp"}).standardize is True


def test_mlp_default_and_given_hidden_units() -> None:
    assert list(_normalised(model={"type": "mlp"}).model.hidden_units) == [32]
    assert list(_normalised(model={"type": "mlp", "hidden_units": [16, 8]}).model.hidden_units) == [16, 8]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rounds": -1}, rf"horizontal\.rounds must be in 1\.\.{MAX_ROUNDS} \(got -1\)"),
        ({"rounds": MAX_ROUNDS + 1}, rf"horizontal\.rounds must be in 1\.\.{MAX_ROUNDS} \(got {MAX_ROUNDS + 1}\)"),
        ({"local_epochs": -2}, r"horizontal\.local_epochs must be in 1\.\.10000 \(got -2\)"),
        ({"local_epochs": 10_001}, r"horizontal\.local_epochs must be in 1\.\.10000"),
        ({"batch_size": -1}, r"horizontal\.batch_size must be >= 0"),
        ({"learning_rate": -0.1}, r"horizontal\.learning_rate must be in \(0, 100\] \(got -0\.1\)"),
        ({"learning_rate": 101}, r"horizontal\.learning_rate must be in \(0, 100\] \(got 101\.0\)"),
        ({"learning_rate": "NaN"}, r"horizontal\.learning_rate must be in \(0, 100\] \(got nan\)"),
        ({"learning_rate": "Infinity"}, r"horizontal\.learning_rate must be in \(0, 100\] \(got inf\)"),
        ({"alpha": -1}, r"horizontal\.alpha must be >= 0 \(got -1\.0\)"),
        ({"alpha": "NaN"}, r"horizontal\.alpha must be >= 0 \(got nan\)"),
        ({"min_parties": -1}, r"horizontal\.min_parties must be in 1\.\.10000"),
        ({"fraction": -0.5}, r"horizontal\.fraction must be in \(0, 1\] \(got -0\.5\)"),
        ({"fraction": 1.5}, r"horizontal\.fraction must be in \(0, 1\] \(got 1\.5\)"),
        ({"round_timeout_s": -1}, r"horizontal\.round_timeout must be in \(0, 86400\] s \(got -1 s\)"),
        ({"round_timeout_s": 86_401}, r"horizontal\.round_timeout must be in \(0, 86400\] s \(got 86401 s\)"),
        ({"max_round_retries": -1}, r"horizontal\.max_round_retries must be in 0\.\.100 \(got -1\)"),
        ({"max_round_retries": 101}, r"horizontal\.max_round_retries must be in 0\.\.100 \(got 101\)"),
        ({"evaluate_every": -1}, r"horizontal\.evaluate_every must be >= 0 \(got -1\)"),
        ({"max_party_weight": 1.5}, r"horizontal\.max_party_weight must be in \(0, 1\] \(got 1\.5\)"),
        ({"max_party_weight": -0.1}, r"horizontal\.max_party_weight must be in \(0, 1\]"),
        ({"max_party_weight": "NaN"}, r"horizontal\.max_party_weight must be in \(0, 1\] \(got nan\)"),
        ({"max_party_weight": 0.5, "secure_aggregation": "paillier"},
         r"horizontal\.max_party_weight must be 1 with secure aggregation"),
        ({"dataset": None}, r"horizontal\.dataset must name a dataset the parties hold"),
        ({"dataset": "   "}, r"horizontal\.dataset must name a dataset"),
        ({"model": None}, r"horizontal\.model\.type must be logistic_regression, mlp or vector"),
        ({"model": {"type": "unspecified"}}, r"horizontal\.model\.type must be logistic_regression, mlp or vector"),
        ({"model": {"type": "logistic_regression", "hidden_units": [8]}},
         r"horizontal\.model\.hidden_units applies to mlp models only"),
        ({"model": {"type": "vector", "vector_size": 4, "hidden_units": [8]}},
         r"horizontal\.model\.hidden_units applies to mlp models only"),
        ({"model": {"type": "mlp", "hidden_units": [8, 0]}},
         r"horizontal\.model\.hidden_units must be 1\.\.8 layers of 1\.\.65536 units \(got \[8, 0\]\)"),
        ({"model": {"type": "mlp", "hidden_units": [4] * 9}}, r"horizontal\.model\.hidden_units must be 1\.\.8 layers"),
        ({"model": {"type": "mlp", "hidden_units": [65_537]}}, r"horizontal\.model\.hidden_units must be 1\.\.8 layers"),
        ({"model": {"type": "vector"}}, r"horizontal\.model\.vector_size must be in 1\.\.2147483648 \(got 0\)"),
        ({"model": {"type": "vector", "vector_size": -5}}, r"horizontal\.model\.vector_size must be in 1\.\.2147483648"),
        ({"model": {"type": "vector", "vector_size": 2**31 + 1}}, r"horizontal\.model\.vector_size must be in 1\.\."),
        ({"model": {"type": "mlp", "vector_size": 4}}, r"horizontal\.model\.vector_size applies to vector models only"),
    ],
)
def test_invalid_fields_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    spec = parse_job_spec(_job(**fields))
    with pytest.raises(SpecError, match=f"^{message}"):
        normalise(spec)


def test_nan_learning_rate_built_directly() -> None:
    spec = pb.JobSpec(horizontal=pb.HorizontalJobSpec(
        dataset="d", model=pb.ModelSpec(type=pb.MODEL_TYPE_MLP), learning_rate=math.nan))
    with pytest.raises(SpecError, match=r"^horizontal\.learning_rate must be in \(0, 100\] \(got nan\)$"):
        normalise(spec)


def test_no_job_kind_refused() -> None:
    with pytest.raises(SpecError, match="^spec must set one job kind: horizontal, vertical, vertical_predict or horizontal_predict$"):
        normalise(parse_job_spec({"name": "nothing"}))
    with pytest.raises(SpecError, match="must set one job kind"):
        normalise(pb.JobSpec())


# -- model versions --------------------------------------------------------------------------

VERTICAL = {"guest": "bank", "hosts": ["telecom"], "guest_dataset": "g", "host_dataset": "h"}


@pytest.mark.parametrize("version", ["", "20260205", "3", "prod-1.2_rc"])
def test_training_and_predict_jobs_may_name_string_versions(version: str) -> None:
    train = normalise(parse_job_spec({"vertical": {**VERTICAL, "model_version": version}}))
    assert train.vertical.model_version == version
    predict = normalise(parse_job_spec({"vertical_predict": {**VERTICAL, "model_id": "m", "model_version": version}}))
    assert predict.vertical_predict.model_version == version
    assert normalise(parse_job_spec({"vertical_predict": {**VERTICAL, "model_id": "m", "model_version": "latest"}}))


def test_a_yaml_number_as_version_is_its_digits() -> None:
    spec = parse_job_spec({"vertical_predict": {**VERTICAL, "model_id": "m", "model_version": 20260205}})
    assert spec.vertical_predict.model_version == "20260205"


@pytest.mark.parametrize("version", ["../x", "a/b", ".v", "x" * 65, "has space"])
def test_unsafe_versions_refused_naming_the_field(version: str) -> None:
    with pytest.raises(SpecError, match=r"^vertical\.model_version must be 1 to 64 letters, digits"):
        normalise(parse_job_spec({"vertical": {**VERTICAL, "model_version": version}}))
    with pytest.raises(SpecError, match=r"^vertical_predict\.model_version must be 1 to 64"):
        normalise(parse_job_spec({"vertical_predict": {**VERTICAL, "model_id": "m", "model_version": version}}))
    with pytest.raises(SpecError, match=r"^vertical\.model_version 'latest' names the newest version"):
        normalise(parse_job_spec({"vertical": {**VERTICAL, "model_version": "latest"}}))


# -- vertical parameters: FATE's spellings in job files, enums on the wire ------------------------


def test_fate_spellings_become_enums_and_translate_back() -> None:
    """What a FATE user writes is what the vertical algorithm gets, through the wire's enums."""
    written = {"penalty": "L1", "optimizer": "nesterov_momentum_sgd", "early_stop": "weight_diff",
               "init_method": "random_normal"}
    spec = normalise(parse_job_spec({"vertical": {"guest": "g", "hosts": ["h"], "guest_dataset": "a",
                                                  "host_dataset": "b", "params": written}}))
    params = spec.vertical.params
    assert (params.penalty, params.optimizer, params.early_stop, params.init_method) == (
        common_pb2.PENALTY_L1, vertical_pb2.OPTIMIZER_NESTEROV_MOMENTUM_SGD, vertical_pb2.EARLY_STOP_WEIGHT_DIFF,
        vertical_pb2.INIT_METHOD_RANDOM_NORMAL)
    assert {name: getattr(hetero_params(params), name) for name in written} == written
    assert hetero_params(vertical_pb2.HeteroLRParams()) == HeteroLRParams()  # UNSPECIFIED: the defaults


def test_a_misspelt_vertical_enum_names_the_field_and_the_spellings() -> None:
    with pytest.raises(JobFileError, match=r"^vertical\.params\.optimizer: unknown value 'sgdd'; choose one of "
                                           r"sgd, adam, rmsprop, adagrad, nesterov_momentum_sgd$"):
        parse_job_spec({"vertical": {"params": {"optimizer": "sgdd"}}})

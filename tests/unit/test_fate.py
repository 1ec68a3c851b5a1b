"""FATE job configurations translated into fedsuite jobs (fedsuite.fate via fedsuite.jobfile), on the
shapes FATE's own examples use: DSL v2 confs and the 1.x algorithm conf."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedcore.config import load_config
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2

from fedsuite import cli
from fedsuite.coordinator.specs import normalise
from fedsuite.fate import is_fate_conf, translate
from fedsuite.jobfile import JobFileError, load_job, parse_job_spec
from fedsuite.party import PartyConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARTIES = {"9999": "bank", "10000": "telecom"}

# FATE 1.x examples/dsl/v2/hetero_logistic_regression/hetero_lr_normal_conf.json, as FATE ships it.
HETERO_LR_NORMAL: dict[str, Any] = {
    "dsl_version": 2,
    "initiator": {"role": "guest", "party_id": 9999},
    "role": {"arbiter": [10000], "host": [10000], "guest": [9999]},
    "component_parameters": {
        "role": {
            "host": {"0": {"reader_0": {"table": {"name": "breast_hetero_host", "namespace": "experiment"}},
                           "data_transform_0": {"with_label": False}}},
            "guest": {"0": {"reader_0": {"table": {"name": "breast_hetero_guest", "namespace": "experiment"}},
                            "data_transform_0": {"with_label": True}}},
        },
        "common": {
            "data_transform_0": {"output_format": "dense"},
            "hetero_lr_0": {
                "penalty": "L2", "tol": 0.0001, "alpha": 0.01, "optimizer": "rmsprop", "batch_size": 320,
                "learning_rate": 0.15, "encrypt_param": {"key_length": 1024}, "init_param": {"init_method": "zeros"},
                "max_iter": 30, "early_stop": "diff",
                "cv_param": {"n_splits": 5, "shuffle": False, "random_seed": 103, "need_cv": False},
                "sqn_param": {"update_interval_L": 3, "memory_M": 5, "sample_size": 5000, "random_seed": None},
            },
            "intersection_0": {"intersect_method": "rsa", "rsa_params": {
                "hash_method": "sha256", "final_hash_method": "sha256", "key_length": 1024}},
            "evaluation_0": {"eval_type": "binary"},
        },
    },
}


def _conf(**changes: Any) -> dict[str, Any]:
    """HETERO_LR_NORMAL with hetero_lr_0 parameters replaced (None removes one)."""
    conf = copy.deepcopy(HETERO_LR_NORMAL)
    lr = conf["component_parameters"]["common"]["hetero_lr_0"]
    for key, value in changes.items():
        lr.pop(key, None) if value is None else lr.__setitem__(key, value)
    return conf


def _error(conf: dict[str, Any], parties: dict[str, str] | None = None) -> str:
    with pytest.raises(ValueError) as caught:
        translate(conf, PARTIES if parties is None else parties)
    return str(caught.value)


def test_fate_hetero_lr_conf_as_fate_ships_it() -> None:
    translation = translate(HETERO_LR_NORMAL, PARTIES)
    assert translation.job == {"name": "fate-hetero_lr_0", "vertical": {
        "guest": "bank", "hosts": ["telecom"], "guest_dataset": "breast_hetero_guest",
        "host_dataset": "breast_hetero_host",
        "params": {"penalty": "L2", "alpha": 0.01, "tol": 0.0001, "optimizer": "rmsprop", "batch_size": 320,
                   "learning_rate": 0.15, "max_iter": 30, "early_stop": "diff", "decay": 1.0, "decay_sqrt": True,
                   "init_method": "zeros", "fit_intercept": True, "key_length": 1024, "psi_key_length": 1024}}}
    spec = normalise(parse_job_spec(translation.job))
    assert spec.vertical.params.key_length == 1024 and spec.vertical.params.init_method == vertical_pb2.INIT_METHOD_ZEROS
    notes = "\n".join(translation.notes)
    assert "hetero_lr_0: cv_param, sqn_param not applied" in notes
    assert "FATE's arbiter 10000 is not mapped" in notes
    assert "1024" not in notes  # the conf set both key lengths: nothing to explain


def test_unset_key_length_keeps_fates_1024_and_says_why_fedsuite_defaults_to_2048() -> None:
    conf = _conf(encrypt_param=None)
    del conf["component_parameters"]["common"]["intersection_0"]["rsa_params"]["key_length"]
    translation = translate(conf, PARTIES)
    params = translation.job["vertical"]["params"]
    assert params["key_length"] == 1024 and params["psi_key_length"] == 1024
    (note,) = [n for n in translation.notes if "key_length" in n]
    assert note.startswith("hetero_lr_0.encrypt_param.key_length and intersection_0.rsa_params.key_length are unset, "
                           "which meant 1024 bits in FATE")
    assert "fedsuite's own default is 2048" in note and "NIST's 112-bit" in note


def test_unset_parameters_take_fates_defaults_not_fedsuites() -> None:
    translation = translate(_conf(learning_rate=None, max_iter=None, init_param=None), PARTIES)
    params = translation.job["vertical"]["params"]
    assert (params["learning_rate"], params["max_iter"], params["init_method"]) == (0.01, 100, "random_uniform")
    assert ("hetero_lr_0 leaves learning_rate, max_iter, init_method unset: this job keeps FATE's defaults "
            "(learning_rate 0.01, max_iter 100, init_method random_uniform), not fedsuite's") in translation.notes


def test_nested_fate_parameters_are_flattened() -> None:
    params = translate(_conf(init_param={"init_method": "const", "init_const": 1, "fit_intercept": False,
                                         "random_seed": 42}, penalty=None), PARTIES).job["vertical"]["params"]
    assert (params["init_method"], params["fit_intercept"], params["seed"], params["penalty"]) == ("ones", False, 42, "L2")
    assert translate(_conf(penalty=None, optimizer="SGD"), PARTIES).job["vertical"]["params"]["optimizer"] == "sgd"
    conf = _conf()
    conf["component_parameters"]["common"]["hetero_lr_0"]["penalty"] = None  # FATE's null penalty: none
    assert translate(conf, PARTIES).job["vertical"]["params"]["penalty"] == "none"


def test_the_seed_algorithm_conf_shape(tmp_path: Path) -> None:
    loaded = load_job(EXAMPLES / "fate" / "algorithm.conf", {"9999": "party-a", "10000": "party-b"})
    body = loaded.translated["vertical"]  # type: ignore[index]
    assert (body["model_id"], body["model_version"]) == ("bank-telecom-lr", "20260205")
    assert (body["guest"], body["hosts"], body["guest_dataset"]) == ("party-a", ["party-b"], "breast_guest")
    assert body["params"]["init_method"] == "zeros" and body["params"]["key_length"] == 1024
    spec = normalise(loaded.spec)
    assert spec.vertical.model_version == "20260205" and spec.vertical.model_id == "bank-telecom-lr"
    assert "FATE runtime settings mean nothing to fedsuite and are ignored: work_mode" in loaded.notes


def test_fate_1x_role_parameters_with_per_party_lists() -> None:
    """FATE 1.x examples/dsl/v1 shape: tables in role_parameters.<role>.args.data and one value per party,
    algorithm_parameters, and intersection settings repeated per role (merged when the parties agree)."""
    conf = {
        "initiator": {"role": "guest", "party_id": 10000},
        "job_parameters": {"work_mode": 0},
        "role": {"guest": [9999], "host": [10000, 10001], "arbiter": [10000]},
        "role_parameters": {
            "guest": {"args": {"data": {"train_data": [{"name": "g", "namespace": "e"}]}},
                      "dataio_0": {"with_label": [True]}, "intersect_0": {"intersect_method": ["rsa"]}},
            "host": {"args": {"data": {"train_data": [{"name": "h", "namespace": "e"}, {"name": "h", "namespace": "e"}]}},
                     "dataio_0": {"with_label": [False, False]}, "intersect_0": {"intersect_method": ["rsa", "rsa"]}},
        },
        "algorithm_parameters": {"hetero_lr_0": {"max_iter": 5, "encrypt_param": {"key_length": 2048}},
                                 "intersect_0": {"rsa_params": {"key_length": 2048}}},
    }
    job = translate(conf, {**PARTIES, "10001": "shop"}).job
    assert job["vertical"]["hosts"] == ["telecom", "shop"]
    assert (job["vertical"]["guest_dataset"], job["vertical"]["host_dataset"]) == ("g", "h")
    assert job["vertical"]["params"]["psi_key_length"] == 2048
    conf["role_parameters"]["host"]["intersect_0"] = {"intersect_method": ["rsa", "dh"]}
    assert "host 1: intersect_0 parameters must be the same for every party" in _error(conf, {**PARTIES, "10001": "s"})


def test_multi_host_index_and_dataset_mapping_in_the_fedsuite_block() -> None:
    conf = copy.deepcopy(HETERO_LR_NORMAL)
    conf["role"]["host"] = [10000, 10001]
    conf["component_parameters"]["role"]["host"] = {"0|1": conf["component_parameters"]["role"]["host"]["0"]}
    conf["fedsuite"] = {"parties": {"9999": "bank", "10000": "telecom", "10001": "shop"},
                        "datasets": {"experiment.breast_hetero_host": "features", "breast_hetero_guest": "labels"},
                        "name": "from-fate"}
    job = translate(conf, {"10001": "store"}).job  # the CLI's --party wins over the block
    assert job["name"] == "from-fate"
    assert (job["vertical"]["hosts"], job["vertical"]["host_dataset"]) == (["telecom", "store"], "features")
    assert job["vertical"]["guest_dataset"] == "labels"


def test_predict_conf_with_a_string_model_version() -> None:
    conf = {"dsl_version": 2, "role": {"guest": [9999], "host": [10000], "arbiter": [10000]},
            "job_parameters": {"common": {"model_id": "job-1", "model_version": 20260205}},
            "component_parameters": {"role": {
                "guest": {"0": {"reader_0": {"table": {"name": "g", "namespace": "e"}}}},
                "host": {"0": {"reader_0": {"table": {"name": "h", "namespace": "e"}}}}}}}
    job = translate(conf, PARTIES).job
    assert job["vertical_predict"] == {"guest": "bank", "hosts": ["telecom"], "guest_dataset": "g",
                                       "host_dataset": "h", "model_id": "job-1", "model_version": "20260205"}
    assert normalise(parse_job_spec(job)).vertical_predict.model_version == "20260205"
    conf["job_parameters"]["common"]["model_id"] = ""  # as FATE's example ships it, for the user to fill in
    assert "job_parameters.common.model_id: a predict conf names the trained model" in _error(conf)


def test_homo_lr_conf_becomes_a_horizontal_job() -> None:
    loaded = load_job(EXAMPLES / "fate" / "homo_lr_conf.json")
    assert loaded.translated == {"name": "fate-homo_lr_0", "horizontal": {
        "dataset": "breast", "model": {"type": "logistic_regression"}, "rounds": 30, "local_epochs": 1,
        "batch_size": 0, "learning_rate": 0.15, "penalty": "l2", "alpha": 0.01, "min_parties": 2,
        "standardize": False}}
    h = normalise(loaded.spec).horizontal
    assert (h.rounds, h.penalty, h.secure_aggregation) == (30, common_pb2.PENALTY_L2, pb.SECURE_AGGREGATION_NONE)
    notes = "\n".join(loaded.notes)
    assert "homo_lr_0: tol, init_param, early_stop, decay, decay_sqrt not applied" in notes
    assert "optimizer" not in notes  # sgd is what fedsuite does


def test_homo_lr_paillier_and_aggregate_iters() -> None:
    conf = json.loads((EXAMPLES / "fate" / "homo_lr_conf.json").read_text())
    conf["component_parameters"]["common"]["homo_lr_0"].update(
        {"encrypt_param": {"method": "Paillier"}, "aggregate_iters": 3, "max_iter": 30})
    translation = translate(conf, {})
    h = translation.job["horizontal"]
    assert (h["secure_aggregation"], h["key_bits"], h["rounds"], h["local_epochs"]) == ("paillier", 1024, 10, 3)
    assert any("encrypt_param.key_length is unset, which meant 1024 bits" in n for n in translation.notes)


def test_every_problem_of_a_conf_is_reported_at_once() -> None:
    conf = _conf(learning_rte=0.1, cv_param={"need_cv": True}, init_param={"init_mthod": "zeros"})
    conf["job_paramters"] = {}
    conf["job_parameters"] = {"common": {"work_mode": 0, "gpu": True}}
    conf["component_parameters"]["common"]["hetero_feature_binning_0"] = {}
    conf["fedsuite"] = {"partys": {}}
    message = _error(conf, {})
    assert message.startswith("unknown key(s): job_paramters, fedsuite.partys, job_parameters.common.gpu, "
                              "component_parameters.common.hetero_lr_0.init_param.init_mthod, "
                              "component_parameters.common.hetero_lr_0.learning_rte; the top level takes "), message
    for part in ("component_parameters.common.hetero_feature_binning_0: fedsuite has no counterpart of this component",
                 "component_parameters.common.hetero_lr_0.cv_param.need_cv: must be false in fedsuite (got True)",
                 'FATE parties 9999 (guest), 10000 (host) have no fedsuite party: pass --party 9999=NAME '
                 '--party 10000=NAME or add "fedsuite": {"parties": {"9999": NAME, "10000": NAME}} to the conf'):
        assert part in message, message


@pytest.mark.parametrize(("change", "words"), [
    ({"encrypt_param": {"key_length": 512}},
     "component_parameters.common.hetero_lr_0.encrypt_param.key_length: must be one of 1024, 2048, 3072 (got 512)"),
    ({"optimizer": "sqn"}, "component_parameters.common.hetero_lr_0.optimizer: must be one of sgd, adam"),
    ({"tol": "small"}, "component_parameters.common.hetero_lr_0.tol: must be a finite number (got 'small')"),
    ({"batch_strategy": "random"}, "hetero_lr_0.batch_strategy: must be full in fedsuite (got 'random')"),
    ({"encrypt_param": {"method": None}}, "hetero_lr_0.encrypt_param.method: must be paillier or ipcl in fedsuite"),
    ({"early_stopping_rounds": 3}, "hetero_lr_0.early_stopping_rounds: must be null in fedsuite (got 3)"),
])
def test_bad_or_unsupported_values_named_by_their_fate_path(change: dict[str, Any], words: str) -> None:
    assert words in _error(_conf(**change))


def test_confs_fedsuite_cannot_run_are_refused_with_the_reason() -> None:
    alone = {"dsl_version": 2, "role": {"guest": [9999], "host": [10000]},
             "component_parameters": {"common": {"intersect_0": {"intersect_method": "rsa"}}}}
    assert "fedsuite has no stand-alone intersection job" in _error(alone)
    same_party = copy.deepcopy(HETERO_LR_NORMAL)
    same_party["role"]["host"] = [10000, 9999]  # FATE's one-machine multi-host example
    assert "FATE party 9999 is both guest and host" in _error(same_party)
    multi = copy.deepcopy(HETERO_LR_NORMAL)
    multi["component_parameters"]["common"]["evaluation_0"]["eval_type"] = "multi"
    assert "evaluation_0.eval_type: fedsuite's logistic regressions here are binary" in _error(multi)
    homo = json.loads((EXAMPLES / "fate" / "homo_lr_conf.json").read_text())
    del homo["fedsuite"]
    assert "parties read different tables (breast_homo_guest, breast_homo_host)" in _error(homo)


def test_fedsuite_job_files_are_not_fate_confs() -> None:
    assert not is_fate_conf({"name": "x", "horizontal": {}})
    assert is_fate_conf(HETERO_LR_NORMAL) and is_fate_conf({"role_parameters": {}})


@pytest.mark.parametrize("name", ["hetero_lr_conf.json", "hetero_lr_predict_conf.json", "homo_lr_conf.json"])
def test_example_fate_confs_run_on_the_example_parties(name: str) -> None:
    spec = normalise(load_job(EXAMPLES / "fate" / name).spec)
    datasets = {party: load_config(PartyConfig, EXAMPLES / f"{party}.yaml", environ={}).datasets
                for party in ("party-a", "party-b")}
    if spec.HasField("horizontal"):
        assert all(spec.horizontal.dataset in d for d in datasets.values())
    else:
        body = spec.vertical if spec.HasField("vertical") else spec.vertical_predict
        assert body.guest_dataset in datasets[body.guest] and body.host_dataset in datasets[body.hosts[0]]
        assert body.model_version == "20260205"


def test_cli_dry_run_prints_the_job_as_yaml_that_loads_back(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = EXAMPLES / "fate" / "algorithm.conf"
    assert cli.main(["job", "submit", str(conf), "--party", "9999=party-a", "--party", "10000=party-b", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {conf} (a FATE job configuration) as a fedsuite job:\n")
    assert "# note: hetero_lr_0.encrypt_param.key_length is unset, which meant 1024 bits in FATE" in out
    assert yaml.safe_load(out)["vertical"]["model_version"] == "20260205"
    saved = tmp_path / "job.yaml"
    saved.write_text(out)
    assert load_job(saved).spec == load_job(conf, {"9999": "party-a", "10000": "party-b"}).spec
    assert cli.main(["job", "submit", str(conf), "--dry-run"]) == 2
    assert "FATE parties 9999 (guest), 10000 (host) have no fedsuite party" in capsys.readouterr().err


def test_a_fate_conf_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(_conf(optimizer="sqn")))
    with pytest.raises(JobFileError, match=rf"^{path}: component_parameters\.common\.hetero_lr_0\.optimizer: "):
        load_job(path, PARTIES)

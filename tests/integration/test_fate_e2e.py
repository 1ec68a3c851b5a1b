"""A FATE hetero LR conf submitted through the real CLI to a federation of real processes (mTLS on
127.0.0.1): it trains under the model_version it names, a predict by that string version (or "latest")
scores the rows, a version that does not exist is NOT_FOUND naming the party and the versions it has,
and training the same version again is ALREADY_EXISTS."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.rpc import make_channel
from fedcore.tls import TlsFiles

from fedsuite.demo import GUEST, HOST, prepare_vertical_data
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from fedsuite.translate import duration

CLI_TIMEOUT_S = 180
ROLES = {"guest": [9999], "host": [10000], "arbiter": [10000]}
TABLES = {"host": {"0": {"reader_0": {"table": {"name": "breast_hetero_host", "namespace": "experiment"}},
                         "data_transform_0": {"with_label": False}}},
          "guest": {"0": {"reader_0": {"table": {"name": "breast_hetero_guest", "namespace": "experiment"}},
                          "data_transform_0": {"with_label": True}}}}
# FATE's examples/dsl/v2/hetero_logistic_regression/hetero_lr_normal_conf.json, shorter (5 epochs) and with a
# user-chosen model_version; the key lengths are left unset, so FATE's 1024 bits apply.
TRAIN_CONF: dict[str, Any] = {
    "dsl_version": 2, "initiator": {"role": "guest", "party_id": 9999}, "role": ROLES,
    "job_parameters": {"common": {"model_version": "20260205"}},
    "component_parameters": {"role": TABLES, "common": {
        "data_transform_0": {"output_format": "dense"},
        "hetero_lr_0": {"penalty": "L2", "tol": 0.0001, "alpha": 0.01, "optimizer": "rmsprop", "batch_size": -1,
                        "learning_rate": 0.15, "init_param": {"init_method": "zeros"}, "max_iter": 5,
                        "early_stop": "diff", "cv_param": {"need_cv": False}},
        "intersection_0": {"intersect_method": "rsa", "rsa_params": {"hash_method": "sha256"}},
        "evaluation_0": {"eval_type": "binary"}}},
    "fedsuite": {"datasets": {"breast_hetero_guest": "breast_guest", "breast_hetero_host": "breast_host"}},
}


def predict_conf(model_id: str, version: str) -> dict[str, Any]:
    """FATE's hetero_lr_normal_predict_conf.json with the model filled in."""
    return {"dsl_version": 2, "initiator": {"role": "guest", "party_id": 9999}, "role": ROLES,
            "job_parameters": {"common": {"job_type": "predict", "model_id": model_id, "model_version": version}},
            "component_parameters": {"role": copy.deepcopy(TABLES)}, "fedsuite": TRAIN_CONF["fedsuite"]}


def submit(federation: LocalFederation, conf: dict[str, Any], path: Path) -> subprocess.CompletedProcess[str]:
    """`fedsuite job submit CONF --party ... --watch` as a user runs it."""
    path.write_text(json.dumps(conf, indent=2))
    return subprocess.run(
        [sys.executable, "-m", "fedsuite.cli", "job", "submit", str(path), "--coordinator",
         federation.coordinator_address, "--certs", str(federation.certs), "--party", f"9999={GUEST}",
         "--party", f"10000={HOST}", "--watch"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def newest_job(federation: LocalFederation) -> pb.Job:
    with federation.admin() as admin:
        return admin.list()[0]


def test_fate_conf_trains_through_the_cli_and_predicts_by_string_version(federation: LocalFederation,
                                                                          tmp_path: Path) -> None:
    data = tmp_path / "data"
    expected = prepare_vertical_data(data)
    federation.start_arbiter()
    federation.start_coordinator()
    federation.start_party(GUEST, {"breast_guest": {"path": str(data / f"{GUEST}.csv"), "label": "target",
                                                    "id_column": "id", "eval_fraction": 0}})
    federation.start_party(HOST, {"breast_host": {"path": str(data / f"{HOST}.csv"), "id_column": "id",
                                                  "eval_fraction": 0}}, role="host")
    federation.wait_for_parties([GUEST, HOST])

    trained = submit(federation, TRAIN_CONF, tmp_path / "hetero_lr_conf.json")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "Traceback" not in trained.stdout + trained.stderr
    assert trained.stdout.startswith(f"# {tmp_path / 'hetero_lr_conf.json'} (a FATE job configuration) as a "
                                     "fedsuite job:\n")
    assert f"guest: {GUEST}" in trained.stdout and "key_length: 1024" in trained.stdout
    assert "which meant 1024 bits in FATE" in trained.stdout and "fedsuite's own default is 2048" in trained.stdout
    job = newest_job(federation)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    assert job.job_id in trained.stdout
    assert job.spec.vertical.params.key_length == 1024 and job.spec.vertical.params.psi_key_length == 1024
    result = job.vertical_result
    assert (result.model_id, result.model_version) == (job.job_id, "20260205")
    assert result.epochs == 5 and result.intersection == expected["intersection"]

    scored = submit(federation, predict_conf(job.job_id, "20260205"), tmp_path / "predict_conf.json")
    assert scored.returncode == 0, scored.stdout + scored.stderr
    predict = newest_job(federation)
    assert predict.state == pb.JOB_STATE_SUCCEEDED, predict.reason
    assert predict.vertical_result.model_version == "20260205"
    assert predict.vertical_result.n_scored == expected["intersection"]
    assert predict.vertical_result.metrics["auc"] > 0.9

    missing = submit(federation, predict_conf(job.job_id, "20991231"), tmp_path / "missing_conf.json")
    assert missing.returncode == 1 and "Traceback" not in missing.stdout + missing.stderr
    failed = newest_job(federation)
    assert failed.state == pb.JOB_STATE_FAILED
    assert (f"NOT_FOUND: party {GUEST} has no model '{job.job_id}' version '20991231'; versions: 20260205"
            in failed.reason) or (f"NOT_FOUND: party {HOST} has no model '{job.job_id}' version '20991231'; "
                                  "versions: 20260205" in failed.reason), failed.reason

    saved = federation.workdir / "party-state" / GUEST / "models" / job.job_id / "v20260205.json"
    before = saved.read_bytes()
    body = {"guest": GUEST, "hosts": [HOST], "guest_dataset": "breast_guest", "host_dataset": "breast_host",
            "model_id": job.job_id}
    with federation.admin() as admin:
        latest = admin.wait(admin.submit(parse_job_spec({"vertical_predict": {**body, "model_version": "latest"}})), 60)
        again = admin.wait(admin.submit(parse_job_spec({"vertical": {
            **body, "model_version": "20260205", "params": {"max_iter": 1, "key_length": 1024,
                                                            "psi_key_length": 1024}}})), 60)
    assert latest.state == pb.JOB_STATE_SUCCEEDED and latest.vertical_result.model_version == "20260205"
    assert again.state == pb.JOB_STATE_FAILED  # a version is never overwritten
    assert "ALREADY_EXISTS: party" in again.reason and f"already has model '{job.job_id}' version '20260205'" in \
        again.reason, again.reason
    assert saved.read_bytes() == before and sorted(p.name for p in saved.parent.iterdir()) == ["v20260205.json"]

    # The party itself answers NOT_FOUND (not UNKNOWN) to the coordinator's call.
    task = vertical_pb2.VerticalTask(
        job_id="direct.1", kind=vertical_pb2.VERTICAL_KIND_PREDICT, role=vertical_pb2.VERTICAL_ROLE_GUEST,
        guest=GUEST, hosts=[HOST], peers={HOST: federation.nodes[HOST].address}, dataset="breast_guest",
        step_timeout=duration(5), model_id=job.job_id, model_version="v9")
    channel = make_channel(federation.nodes[GUEST].address, TlsFiles.in_dir(federation.certs, "coordinator"))
    try:
        call = channel.unary_stream("/fedsuite.v1.Party/RunVertical",
                                    request_serializer=vertical_pb2.VerticalTask.SerializeToString,
                                    response_deserializer=vertical_pb2.VerticalProgress.FromString)
        with pytest.raises(grpc.RpcError) as caught:
            list(call(task, timeout=15))
    finally:
        channel.close()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert caught.value.details() == (  # type: ignore[attr-defined]
        f"party {GUEST} has no model '{job.job_id}' version 'v9'; versions: 20260205")

"""What a vertical job gives its users, through real processes over mTLS: the guest's train AUC and KS
in the job, metrics on every node, live progress, per-id scores that stay on the guest, and a
download that says where the split model is.

Every expected number is computed here from the guest's and host's CSVs and the model halves the
parties stored, never taken from the system under test.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from sklearn.metrics import roc_auc_score, roc_curve

from fedcore.data import DatasetConfig, load_dataset
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2
from fedcore.vertical import GuestModel, HostModel

from fedsuite.demo import GUEST, HOST, VERTICAL_PARAMS, prepare_vertical_data
from fedsuite.local import LocalFederation
from fedsuite.progress import follow_job
from fedsuite.translate import duration
from tests.conftest import NODES

MAX_ITER = 6
PARAMS = {**VERTICAL_PARAMS, "max_iter": MAX_ITER, "tol": 0.0, "psi_key_length": 1024}


@dataclass
class Trained:
    federation: LocalFederation
    job: pb.Job
    events: list[pb.JobEvent]


def predict_spec(model_id: str, scores_path: str = "") -> pb.JobSpec:
    return pb.JobSpec(vertical_predict=vertical_pb2.VerticalPredictSpec(
        guest=GUEST, hosts=[HOST], guest_dataset="g", host_dataset="h", model_id=model_id, scores_path=scores_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    federation = LocalFederation(tmp_path_factory.mktemp("vertical-outputs"))
    federation.init_certs(NODES)
    try:
        prepare_vertical_data(federation.workdir / "data")
        federation.start_arbiter()
        federation.start_coordinator()
        federation.start_party(GUEST, {"g": {"path": f"data/{GUEST}.csv", "label": "target", "id_column": "id",
                                             "eval_fraction": 0}})
        federation.start_party(HOST, {"h": {"path": f"data/{HOST}.csv", "id_column": "id", "eval_fraction": 0}},
                               role="host")
        federation.wait_for_parties([GUEST, HOST])
        spec = pb.JobSpec(vertical=vertical_pb2.VerticalJobSpec(
            guest=GUEST, hosts=[HOST], guest_dataset="g", host_dataset="h", step_timeout=duration(30),
            params=vertical_pb2.HeteroLRParams(**{  # the wire's enums for VERTICAL_PARAMS' FATE spellings
                **PARAMS, "penalty": common_pb2.PENALTY_L2, "optimizer": vertical_pb2.OPTIMIZER_NESTEROV_MOMENTUM_SGD,
                "early_stop": vertical_pb2.EARLY_STOP_DIFF})))
        with federation.admin() as admin:
            job = admin.wait(admin.submit(spec), 240)
            events = list(admin.watch(job.job_id, 10))
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
        yield Trained(federation, job, events)
    finally:
        federation.stop_all()


def model_halves(trained: Trained) -> tuple[GuestModel, HostModel]:
    """The halves each party saved, read from its own state directory."""
    version = trained.job.vertical_result.model_version
    documents = [json.loads((trained.federation.workdir / "party-state" / party / "models" / trained.job.job_id /
                             f"v{version}.json").read_text()) for party in (GUEST, HOST)]
    return GuestModel.from_dict(documents[0]), HostModel.from_dict(documents[1])


def expected_scores(trained: Trained) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(shared ids, sigmoid(guest part + host part), labels), from the CSVs and the stored halves."""
    data = trained.federation.workdir / "data"
    guest = load_dataset("g", DatasetConfig(path=str(data / f"{GUEST}.csv"), label="target", id_column="id",
                                            eval_fraction=0))
    host = load_dataset("h", DatasetConfig(path=str(data / f"{HOST}.csv"), id_column="id", eval_fraction=0))
    assert guest.ids is not None and host.ids is not None and guest.y is not None
    shared = sorted(set(guest.ids.tolist()) & set(host.ids.tolist()))
    at_guest = {identifier: row for row, identifier in enumerate(guest.ids.tolist())}
    at_host = {identifier: row for row, identifier in enumerate(host.ids.tolist())}
    guest_rows, host_rows = [at_guest[i] for i in shared], [at_host[i] for i in shared]
    guest_model, host_model = model_halves(trained)
    score = guest_model.decision(guest.X[guest_rows]) + host_model.decision(host.X[host_rows])
    return shared, 1.0 / (1.0 + np.exp(-score)), guest.y[guest_rows]


def scrape(trained: Trained, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A node's /metrics: (sample name, sorted labels) -> value."""
    port = trained.federation.nodes[node].metrics_port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def watched(trained: Trained, job_id: str) -> str:
    """What `job watch` prints for a job (its whole history is replayed)."""
    output = io.StringIO()
    with trained.federation.admin() as admin:
        follow_job(admin, job_id, Console(file=output, width=200, force_terminal=False))
    return output.getvalue()


def test_a_training_job_reports_the_guests_train_auc_and_ks_of_the_split_model(trained: Trained) -> None:
    result = trained.job.vertical_result
    _, probability, labels = expected_scores(trained)
    false_positive, true_positive, _ = roc_curve(labels, probability)
    assert abs(result.metrics["auc"] - roc_auc_score(labels, probability)) <= 1e-9
    assert abs(result.metrics["ks"] - float(np.max(true_positive - false_positive))) <= 1e-9
    assert 0.9 < result.metrics["auc"] <= 1.0 and result.epochs == MAX_ITER
    # the events carry the epochs out of max_iter, then the evaluation, before the job ends
    kinds = [e.type for e in trained.events]
    assert trained.events[0].type == pb.JOB_EVENT_TYPE_STARTED and trained.events[0].total_rounds == MAX_ITER
    epochs = [e for e in trained.events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    assert [(e.round, e.total_rounds) for e in epochs] == [(n, MAX_ITER) for n in range(1, MAX_ITER + 1)]
    evaluated = [e for e in trained.events if e.type == pb.JOB_EVENT_TYPE_PROGRESS]
    assert len(evaluated) == 1 and dict(evaluated[0].evaluation) == dict(result.metrics)
    assert kinds.index(pb.JOB_EVENT_TYPE_PROGRESS) > kinds.index(pb.JOB_EVENT_TYPE_ROUND_COMMITTED) + MAX_ITER - 1
    assert kinds[-1] == pb.JOB_EVENT_TYPE_SUCCEEDED
    assert [e.total_rounds for e in trained.events] == [MAX_ITER] * len(trained.events)  # every event, the last too
    # `job watch` counts epochs, not rounds, and shows the guest's evaluation
    shown = watched(trained, trained.job.job_id)
    assert f"epoch {MAX_ITER} loss=" in shown and "round " not in shown, shown
    assert f"auc={result.metrics['auc']:.4f} ks={result.metrics['ks']:.4f}" in shown, shown


def test_every_node_exports_the_jobs_traffic_epochs_decryptions_loss_and_auc(trained: Trained) -> None:
    job_id, result = trained.job.job_id, trained.job.vertical_result
    guest, host, arbiter, coordinator = (scrape(trained, n) for n in (GUEST, HOST, "arbiter", "coordinator"))

    def sent(metrics: dict, direction: str, peer: str) -> float:  # type: ignore[type-arg]
        return metrics.get(("federated_communication_bytes_total", (("direction", direction), ("peer", peer))), 0.0)

    assert sent(guest, "sent", HOST) > 0 and sent(guest, "received", HOST) > 0 and sent(guest, "sent", "arbiter") > 0
    assert sent(host, "sent", GUEST) > 0 and sent(host, "received", "arbiter") > 0
    assert sent(arbiter, "received", GUEST) > 0 and sent(arbiter, "sent", HOST) > 0
    # one round-duration observation per epoch on each node that trained
    assert arbiter[("federated_round_duration_seconds_count", ())] == MAX_ITER
    for node in (guest, host):
        assert node[("federated_round_duration_seconds_count", ())] == MAX_ITER
        assert node[("federated_round_duration_seconds_sum", ())] > 0
    # every epoch the arbiter decrypts at least each party's masked gradient and the loss
    assert arbiter[("federated_decryptions_total", (("job_id", job_id),))] >= 3 * MAX_ITER
    for node in (arbiter, coordinator):
        assert node[("federated_training_loss", (("job_id", job_id),))] == pytest.approx(result.losses[-1], rel=1e-12)
    for node in (guest, coordinator):
        auc = node[("federated_model_auc", (("job_id", job_id), ("participant_id", GUEST)))]
        assert auc == pytest.approx(result.metrics["auc"], rel=1e-12)


def test_vertical_predict_writes_each_ids_score_on_the_guest_and_nowhere_else(trained: Trained) -> None:
    workdir = trained.federation.workdir
    with trained.federation.admin() as admin:
        scored = admin.wait(admin.submit(predict_spec(trained.job.job_id, "daily/scores.csv")), 120)
        events = list(admin.watch(scored.job_id, 10))
    assert scored.state == pb.JOB_STATE_SUCCEEDED, scored.reason
    shared, probability, labels = expected_scores(trained)
    assert scored.vertical_result.n_scored == len(shared) == 529
    assert scored.vertical_result.scores_path == "daily/scores.csv"
    with open(workdir / "party-state" / GUEST / "scores" / "daily" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "score", "label"]
    assert len(rows) == len(shared) and sorted(r["id"] for r in rows) == shared  # one row per aligned id
    by_id = {r["id"]: r for r in rows}
    np.testing.assert_allclose([float(by_id[i]["score"]) for i in shared], probability, rtol=1e-12)
    assert [int(by_id[i]["label"]) for i in shared] == labels.tolist()
    assert abs(scored.vertical_result.metrics["auc"] - roc_auc_score(labels, probability)) <= 1e-9
    assert not (workdir / "party-state" / HOST / "scores").exists()
    # the coordinator holds the evaluation only: no id and no score in its state or its log
    stored = b"".join(p.read_bytes() for p in sorted((workdir / "state").rglob("*")) if p.is_file())
    stored += trained.federation.nodes["coordinator"].log_path.read_bytes()
    assert len(stored) > 10_000
    leaked = [r["id"] for r in rows if r["id"].encode() in stored or r["score"].encode() in stored
              or struct.pack("<d", float(r["score"])) in stored]
    assert leaked == []
    # the guest reported its steps live; `job watch` shows them as steps
    steps = [(e.round, e.total_rounds) for e in events if e.type == pb.JOB_EVENT_TYPE_PROGRESS]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert [e.total_rounds for e in events] == [3] * len(events) and events[-1].type == pb.JOB_EVENT_TYPE_SUCCEEDED
    shown = watched(trained, scored.job_id)
    assert "step 3: wrote 529 scores to daily/scores.csv" in shown and "3/3" in shown, shown


def test_a_scores_path_that_could_leave_the_guests_directory_is_refused_at_submit(trained: Trained) -> None:
    with trained.federation.admin() as admin:
        for path in ("../escape.csv", "/etc/passwd"):
            with pytest.raises(grpc.RpcError) as caught:
                admin.submit(predict_spec(trained.job.job_id, path))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "vertical_predict.scores_path" in caught.value.details()  # type: ignore[attr-defined]


def test_downloading_a_vertical_job_says_where_the_model_is_and_how_to_use_it(trained: Trained) -> None:
    job_id, version = trained.job.job_id, trained.job.vertical_result.model_version
    with trained.federation.admin() as admin:
        with pytest.raises(grpc.RpcError) as caught:
            admin.download_model(job_id)
        scored = admin.wait(admin.submit(predict_spec(job_id)), 120)
        with pytest.raises(grpc.RpcError) as predicted:
            admin.download_model(scored.job_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    details = caught.value.details()  # type: ignore[attr-defined]
    for words in (f"guest {GUEST} keeps its coefficients and intercept", f"each host ({HOST}) its coefficients",
                  f"model {job_id!r} version {version!r}", f"submit a vertical_predict job with model_id: {job_id}"):
        assert words in details, details
    assert predicted.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "is a vertical_predict job" in predicted.value.details()  # type: ignore[attr-defined]

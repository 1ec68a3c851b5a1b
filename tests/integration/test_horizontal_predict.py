"""A horizontal predict job: a trained global model scores each party's own rows there, over real
processes and mTLS; what each party reports equals the model applied to its rows here, and the
scores it keeps equal the downloaded model's predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from fedcore.data import DatasetConfig, load_dataset
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import PARTIES
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from fedsuite.predict import predict_proba
from tests.conftest import breast_dataset
from tests.integration.test_processes_e2e import job, start_parties


def predict_job(model_job_id: str, **fields: object) -> pb.JobSpec:
    """As a job file says it: `timeout_s` and `rows: held_out` are the YAML spellings."""
    return parse_job_spec({"name": "score", "horizontal_predict": {"dataset": "breast", "model_job_id": model_job_id,
                                                                   "timeout_s": 60, **fields}})


def test_each_party_scores_its_own_rows_with_the_global_model(federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        trained = admin.wait(admin.submit(job(rounds=3)), 120)
        assert trained.state == pb.JOB_STATE_SUCCEEDED, trained.reason
        model = admin.download_model(trained.job_id)
        every = admin.wait(admin.submit(predict_job(trained.job_id, scores_path="2026-12/scores.csv")), 60)
        held_out = admin.wait(admin.submit(predict_job(trained.job_id, rows="held_out", parties=list(PARTIES[:2]))), 60)
    assert every.state == pb.JOB_STATE_SUCCEEDED, every.reason
    result = every.horizontal_predict_result
    assert result.model_round == 3 and sorted(result.party_metrics) == sorted(PARTIES)
    for party in PARTIES:
        rows = load_dataset("breast", DatasetConfig(**breast_dataset(breast_dir, party)))  # type: ignore[arg-type]
        X, y = np.concatenate([rows.X, rows.X_eval]), np.concatenate([rows.y, rows.y_eval])
        proba = predict_proba(model, X)
        reported = result.party_metrics[party]
        assert reported.n_samples == len(X) == result.rows_written[party]
        assert reported.loss == pytest.approx(log_loss(y, proba, labels=[0, 1]), abs=1e-9)
        assert reported.accuracy == pytest.approx(accuracy_score(y, proba.argmax(axis=1)), abs=1e-12)
        assert reported.auc == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-9)
        with open(federation.workdir / "party-state" / party / "scores" / "2026-12" / "scores.csv", newline="") as handle:
            kept = list(csv.DictReader(handle))
        assert [int(r["label"]) for r in kept] == y.tolist()
        np.testing.assert_allclose([float(r["score"]) for r in kept], proba[:, 1], rtol=0, atol=1e-12)
    assert result.overall.n_samples == sum(m.n_samples for m in result.party_metrics.values())
    # the held-out rows of the model's round are exactly what training evaluated that round on
    assert held_out.state == pb.JOB_STATE_SUCCEEDED, held_out.reason
    last = trained.rounds[-1].eval_by_party
    for party, metrics in held_out.horizontal_predict_result.party_metrics.items():
        assert metrics.n_samples == last[party].n_samples and metrics.auc == pytest.approx(last[party].auc, abs=1e-12)
    assert sorted(held_out.horizontal_predict_result.party_metrics) == sorted(PARTIES[:2])
    assert not held_out.horizontal_predict_result.rows_written


def test_a_predict_job_without_a_model_to_score_with_is_refused_at_submit(
        federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir, PARTIES[:2])
    with federation.admin() as admin:
        trained = admin.wait(admin.submit(job(rounds=2, min_parties=2)), 120)
        cases = {
            "nosuchjob": (predict_job("nosuchjob"), grpc.StatusCode.FAILED_PRECONDITION, "no job 'nosuchjob'"),
            "round 9": (predict_job(trained.job_id, model_round=9), grpc.StatusCode.FAILED_PRECONDITION,
                        f"job {trained.job_id} has committed rounds 1..2, not round 9"),
            "stranger": (predict_job(trained.job_id, parties=["party-x"]), grpc.StatusCode.FAILED_PRECONDITION,
                         "party 'party-x' was never registered"),
            "path": (predict_job(trained.job_id, scores_path="../out.csv"), grpc.StatusCode.INVALID_ARGUMENT,
                     "horizontal_predict.scores_path '../out.csv' must be a relative path"),
        }
        for name, (spec, code, words) in cases.items():
            with pytest.raises(grpc.RpcError) as caught:
                admin.submit(spec)
            assert caught.value.code() == code, name  # type: ignore[attr-defined]
            assert words in caught.value.details(), (name, caught.value.details())  # type: ignore[attr-defined]
        assert [j.job_id for j in admin.list()] == [trained.job_id]  # nothing was accepted

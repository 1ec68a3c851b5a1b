"""`fedsuite job download --format onnx`: the global model of a real federation's job, scaling folded in, scores
rows in onnxruntime as `fedsuite predict` scores them, for logistic regression and the MLP, binary and 3 classes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from sklearn.datasets import load_wine

from fedcore.data import DatasetConfig, load_dataset
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import PARTIES, write_csv
from fedsuite.local import LocalFederation
from fedsuite.predict import load_model_file, predict_proba
from tests.conftest import breast_dataset
from tests.integration.test_predict_cli import fedsuite
from tests.integration.test_processes_e2e import job

MODELS = {"logistic regression": pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION),
          "mlp": pb.ModelSpec(type=pb.MODEL_TYPE_MLP, hidden_units=[8, 4])}


def wine_csvs(directory: Path) -> dict[str, Path]:
    """Wine (3 classes) dealt round-robin to party-a and party-b; each party's rows as one CSV."""
    data = load_wine()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, party in enumerate(PARTIES[:2]):
        paths[party] = directory / f"{party}.csv"
        write_csv(paths[party], data.data[i::2], data.target[i::2], [f"f{j}" for j in range(data.data.shape[1])])
    return paths


def scored_by_fedsuite(federation: LocalFederation, model: Path, rows: Path, directory: Path) -> np.ndarray:
    """`fedsuite predict`'s probabilities for the CSV's rows (P(class 1) alone for a binary model: both classes)."""
    scored = fedsuite(federation, "predict", "--model", str(model), "--data", str(rows), "--out",
                      str(directory / "scores.csv"), "--label", "target")
    assert scored.returncode == 0, scored.stderr
    with open(directory / "scores.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    if "score" in written[0]:
        p = np.array([float(r["score"]) for r in written])
        return np.column_stack([1 - p, p])
    return np.array([[float(r[f"score_{k}"]) for k in range(3)] for r in written])


@pytest.mark.parametrize("model_type", MODELS)
def test_the_onnx_model_scores_rows_as_fedsuite_does(federation: LocalFederation, breast_dir: Path, tmp_path: Path,
                                                     model_type: str) -> None:
    wine = wine_csvs(tmp_path / "wine")
    federation.start_coordinator()
    for party in PARTIES[:2]:
        federation.start_party(party, {"breast": breast_dataset(breast_dir, party),
                                       "wine": {"path": str(wine[party]), "label": "target"}})
    federation.wait_for_parties(list(PARTIES[:2]))
    for dataset, rows, n_classes in (("breast", breast_dir / "party-c-eval.csv", 2), ("wine", wine["party-a"], 3)):
        spec = job(rounds=3, min_parties=2)
        spec.horizontal.dataset = dataset
        spec.horizontal.model.CopyFrom(MODELS[model_type])
        with federation.admin() as admin:
            finished = admin.wait(admin.submit(spec), 120)
        assert finished.state == pb.JOB_STATE_SUCCEEDED, finished.reason
        out = tmp_path / dataset
        out.mkdir(exist_ok=True)
        for fmt, name in (("npz", "model.npz"), ("onnx", "model.onnx")):
            saved = fedsuite(federation, "job", "download", finished.job_id, str(out / name), "--format", fmt)
            assert saved.returncode == 0 and f"({fmt})" in saved.stdout, saved.stderr

        graph = onnx.load(out / "model.onnx")
        onnx.checker.check_model(graph, full_check=True)
        assert {p.key: p.value for p in graph.metadata_props}["job_id"] == finished.job_id
        session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        X = load_dataset(dataset, DatasetConfig(path=str(rows), label="target", eval_fraction=0)).X  # raw rows
        probabilities, predicted = session.run(["probabilities", "predicted"], {"features": X})

        downloaded = load_model_file(out / "model.npz")
        assert downloaded.info.feature_mean and downloaded.info.n_classes == n_classes  # the scaling is real
        expected = predict_proba(downloaded, X)
        assert probabilities.shape == (len(X), n_classes)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(probabilities, scored_by_fedsuite(federation, out / "model.npz", rows, out),
                                   rtol=0, atol=1e-6)
        assert predicted.tolist() == expected.argmax(axis=1).tolist()
        assert 0.2 < float((expected.argmax(axis=1) == 0).mean()) < 0.8  # a model that learned, not a constant


def test_a_job_without_a_model_is_refused_with_the_download_sentence(federation: LocalFederation, breast_dir: Path,
                                                                     tmp_path: Path) -> None:
    federation.start_coordinator()
    for party in PARTIES[:2]:
        federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
    federation.wait_for_parties(list(PARTIES[:2]))
    federation.nodes["party-b"].kill()  # still registered, gone: no round of two can commit
    with federation.admin() as admin:
        waiting = admin.submit(job(rounds=3, min_parties=2))
    refused = fedsuite(federation, "job", "download", waiting, str(tmp_path / "m.onnx"), "--format", "onnx")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [f"fedsuite: FAILED_PRECONDITION: job {waiting} has no model yet"], refused.stderr
    assert not (tmp_path / "m.onnx").exists()

"""Multinomial logistic regression and the MLP trained by FedAvg over real gRPC and mTLS (wine, 3 classes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split

from fedcore.data import DatasetConfig
from fedcore.ml.models import build_model
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import CoordinatorAdmin
from fedsuite.coordinator import Coordinator, CoordinatorConfig
from fedsuite.demo import write_csv
from fedsuite.party import Party, PartyConfig
from fedsuite.translate import model_config
from tests.conftest import tls, tls_config


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("wine")
    data = load_wine()
    X_train, X_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.25,
                                                        stratify=data.target, random_state=0)
    names = [f"f{i}" for i in range(X_train.shape[1])]
    for i, rows in enumerate(np.array_split(np.arange(len(y_train)), 2)):
        write_csv(directory / f"party-{'ab'[i]}.csv", X_train[rows], y_train[rows], names)
    return {"dir": directory, "X_test": X_test, "y_test": y_test}


@pytest.fixture(scope="module")
def federation(pki: Path, wine: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    base = tmp_path_factory.mktemp("state")
    coordinator = Coordinator(CoordinatorConfig(node_id="coordinator", listen="127.0.0.1:0", state_dir=str(base),
                                                tls=tls_config(pki, "coordinator"), heartbeat_interval_s=0.5), base)
    directory = wine["dir"]
    assert isinstance(directory, Path)
    parties = [Party(PartyConfig(node_id=name, listen="127.0.0.1:0", tls=tls_config(pki, name),
                                 coordinator=f"127.0.0.1:{coordinator.port}",
                                 datasets={"wine": DatasetConfig(path=str(directory / f"{name}.csv"), label="target")}),
                     directory) for name in ("party-a", "party-b")]
    assert all(p.registered.wait(10) for p in parties)
    yield coordinator
    for party in parties:
        party.stop()
    coordinator.stop()


@pytest.mark.parametrize("model", [pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION),
                                   pb.ModelSpec(type=pb.MODEL_TYPE_MLP, hidden_units=[16])])
def test_three_class_models_learn_over_the_federation(pki: Path, wine: dict[str, object], federation: Coordinator,
                                                      model: pb.ModelSpec) -> None:
    spec = pb.JobSpec(horizontal=pb.HorizontalJobSpec(dataset="wine", model=model, rounds=15, local_epochs=2,
                                                      batch_size=16, learning_rate=0.05, min_parties=2, seed=1))
    with CoordinatorAdmin(f"127.0.0.1:{federation.port}", tls(pki, "admin")) as admin:
        job = admin.wait(admin.submit(spec), 120)
        downloaded = admin.download_model(job.job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
    assert downloaded.info.n_classes == 3 and downloaded.weights[-1].shape == (3,)
    last = job.rounds[-1]
    assert set(last.eval_by_party) == {"party-a", "party-b"} and last.eval.accuracy > 0.85
    probabilities = build_model(model_config(downloaded.info.model, 13, 3)).predict_proba(
        downloaded.weights, (wine["X_test"] - np.asarray(downloaded.info.feature_mean)) / np.asarray(downloaded.info.feature_scale))
    accuracy = float((probabilities.argmax(axis=1) == wine["y_test"]).mean())
    assert accuracy > 0.85, accuracy

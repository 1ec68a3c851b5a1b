"""``fedsuite demo``: a real federation on loopback, with mTLS, on data that ships with scikit-learn.

A coordinator, an arbiter and three parties start as separate processes with
certificates made for the run. The breast-cancer rows are split 80/20 (stratified,
fixed seed); the training rows are spread over the three parties, one of them
label-skewed, and each party keeps a share of the test rows as its held-out set.
The federated model is then scored on the whole test set beside a centralized
scikit-learn model trained on all the training rows.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedcore.data import standardize
from fedcore.ml.models import build_model
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.local import LocalFederation
from fedsuite.progress import follow_job
from fedsuite.translate import model_config

SEED = 42
PARTIES = ("party-a", "party-b", "party-c")
AUC_TOLERANCE = 0.01


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, names: list[str]) -> None:
    """A CSV with a header: the features, then ``target``."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "target"])
        for row, label in zip(X, y):
            writer.writerow([*(f"{v:.10g}" for v in row), int(label)])


def split_rows(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Three shares of the row indices; the third is label-skewed (about 85% positive)."""
    positive = rng.permutation(np.flatnonzero(y == 1))
    negative = rng.permutation(np.flatnonzero(y == 0))
    skewed = np.concatenate([positive[: len(positive) // 3], negative[: len(negative) // 9]])
    rest = rng.permutation(np.concatenate([positive[len(positive) // 3 :], negative[len(negative) // 9 :]]))
    half = len(rest) // 2
    return [np.sort(rest[:half]), np.sort(rest[half:]), np.sort(skewed)]


def prepare_horizontal_data(directory: Path) -> dict[str, Any]:
    """Write each party's train/eval CSVs; return the pooled arrays for the baseline."""
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, stratify=data.target, random_state=SEED
    )
    rng = np.random.default_rng(SEED)
    shares = split_rows(y_train, rng)
    test_shares = np.array_split(rng.permutation(len(y_test)), len(PARTIES))
    directory.mkdir(parents=True, exist_ok=True)
    for party, rows, test_rows in zip(PARTIES, shares, test_shares):
        write_csv(directory / f"{party}-train.csv", X_train[rows], y_train[rows], names)
        write_csv(directory / f"{party}-eval.csv", X_test[test_rows], y_test[test_rows], names)
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test,
            "positive_share": [float(y_train[r].mean()) for r in shares], "rows": [len(r) for r in shares]}


def centralized_baseline(data: dict[str, Any]) -> dict[str, float]:
    """scikit-learn's logistic regression on all training rows, standardised."""
    scaler = StandardScaler().fit(data["X_train"])
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(data["X_train"]), data["y_train"])
    p = model.predict_proba(scaler.transform(data["X_test"]))[:, 1]
    return {"auc": float(roc_auc_score(data["y_test"], p)), "accuracy": float(accuracy_score(data["y_test"], p >= 0.5))}


def horizontal_job(rounds: int) -> pb.JobSpec:
    return pb.JobSpec(
        name="breast-cancer-fedavg",
        horizontal=pb.HorizontalJobSpec(
            dataset="breast", model=pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION), rounds=rounds,
            local_epochs=2, batch_size=16, learning_rate=0.05, penalty=pb.PENALTY_L2, alpha=0.001,
            min_parties=3, round_timeout_s=60, seed=SEED,
        ),
    )


def score_global_model(info: pb.ModelInfo, weights: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test-set AUC and accuracy of a downloaded global model."""
    model = build_model(model_config(info.model, info.n_features, info.n_classes))
    features = standardize(X, np.asarray(info.feature_mean), np.asarray(info.feature_scale)) if info.feature_mean else X
    p = model.predict_proba(weights, features)[:, 1]
    return {"auc": float(roc_auc_score(y, p)), "accuracy": float(accuracy_score(y, p >= 0.5))}


def run_horizontal(federation: LocalFederation, data_dir: Path, rounds: int, console: Console) -> dict[str, Any]:
    data = prepare_horizontal_data(data_dir)
    for party in PARTIES:
        federation.start_party(party, {"breast": {
            "path": f"data/{party}-train.csv", "eval_path": f"data/{party}-eval.csv", "label": "target"}})
    federation.wait_for_parties(list(PARTIES))
    started = time.monotonic()
    with federation.admin() as admin:
        job_id = admin.submit(horizontal_job(rounds))
        console.print(f"horizontal job {job_id}: logistic regression, FedAvg over {', '.join(PARTIES)}")
        job = follow_job(admin, job_id, console)
        seconds = time.monotonic() - started
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"horizontal job {job_id} ended {pb.JobState.Name(job.state)}: {job.reason}")
        model = admin.download_model(job_id)
    federated = score_global_model(model.info, model.weights, data["X_test"], data["y_test"])
    central = centralized_baseline(data)
    return {
        "job_id": job_id, "auc": federated["auc"], "accuracy": federated["accuracy"],
        "centralized_auc": central["auc"], "centralized_accuracy": central["accuracy"],
        "rounds": job.current_round, "seconds": round(seconds, 2),
        "party_rows": dict(zip(PARTIES, data["rows"])),
        "party_positive_share": dict(zip(PARTIES, (round(s, 3) for s in data["positive_share"]))),
        "within_tolerance": abs(federated["auc"] - central["auc"]) <= AUC_TOLERANCE,
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="fedsuite demo: federated vs centralized (breast cancer, held-out 20%)")
    for column in ("job", "model", "test AUC", "accuracy", "centralized AUC", "centralized acc.", "rounds", "seconds"):
        table.add_column(column)
    h = report["horizontal"]
    table.add_row("horizontal FedAvg", "logistic regression", f"{h['auc']:.4f}", f"{h['accuracy']:.4f}",
                  f"{h['centralized_auc']:.4f}", f"{h['centralized_accuracy']:.4f}", str(h["rounds"]), f"{h['seconds']:.1f}")
    console.print(table)


def run_demo(workdir: Path | None, rounds: int = 30, console: Console | None = None) -> dict[str, Any]:
    """Run the whole demo and return the report (``ok`` says whether every check held)."""
    console = console or Console()
    scratch = None if workdir is not None else tempfile.TemporaryDirectory(prefix="fedsuite-demo-")
    base = workdir if workdir is not None else Path(scratch.name)  # type: ignore[union-attr]
    try:
        with LocalFederation(base) as federation:
            console.print(f"work directory: {base}")
            federation.init_certs(["coordinator", "arbiter", *PARTIES])
            federation.start_coordinator()
            federation.start_arbiter()
            horizontal = run_horizontal(federation, base / "data", rounds, console)
        report: dict[str, Any] = {"horizontal": horizontal}
        report["ok"] = bool(horizontal["within_tolerance"])
        print_report(report, console)
        return report
    finally:
        if scratch is not None:
            scratch.cleanup()

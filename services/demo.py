"""``fedsuite demo``: a real federation on loopback, with mTLS, on data that ships with scikit-learn.

A coordinator, an arbiter and five parties start as separate processes with
certificates made for the run.

Horizontal: the breast-cancer rows are split 80/20 (stratified, fixed seed); the
training rows are spread over three parties, one of them label-skewed, and each party
keeps a share of the test rows as its held-out set. The federated model is scored on
the whole test set beside a centralized scikit-learn model trained on all the rows.

Vertical: a bank (guest: id, label, 10 features) and a telecom (host: id, the other 20)
align their customers by PSI and train a split logistic regression with the arbiter;
its train AUC is compared with scikit-learn's on the joined table.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Sequence
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
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2

from fedsuite.demo_resilience import run_resilience
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from fedsuite.progress import follow_job
from fedsuite import translate
from fedsuite.translate import duration, model_config

SEED = 42
PARTIES = ("party-a", "party-b", "party-c")
GUEST, HOST = "bank", "telecom"
AUC_TOLERANCE = 0.01
VERTICAL_AUC_TOLERANCE = 0.005
SCORES_PATH = "breast-scores.csv"
"""Where the vertical predict job has the guest write each id's score (under its state_dir's scores/)."""
VERTICAL_PARAMS = {"penalty": "L2", "alpha": 0.01, "optimizer": "nesterov_momentum_sgd", "learning_rate": 0.15,
                   "max_iter": 30, "batch_size": 240, "early_stop": "diff", "tol": 1e-6, "key_length": 1024,
                   "seed": SEED}


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
            local_epochs=2, batch_size=16, learning_rate=0.05, penalty=common_pb2.PENALTY_L2, alpha=0.001,
            min_parties=3, round_timeout=duration(60), seed=SEED,
        ),
    )


def score_global_model(info: pb.ModelInfo, weights: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Test-set AUC and accuracy of a downloaded global model."""
    model = build_model(model_config(info.model, info.n_features, info.n_classes))
    features = standardize(X, np.asarray(info.feature_mean), np.asarray(info.feature_scale)) if info.feature_mean else X
    p = model.predict_proba(weights, features)[:, 1]
    return {"auc": float(roc_auc_score(y, p)), "accuracy": float(accuracy_score(y, p >= 0.5))}


def start_horizontal_parties(federation: LocalFederation, data_dir: Path) -> dict[str, Any]:
    """party-a, -b and -c holding `breast` (each started once), and the data they were given."""
    data = prepare_horizontal_data(data_dir)
    for party in PARTIES:
        if party not in federation.nodes:
            federation.start_party(party, {"breast": {
                "path": f"data/{party}-train.csv", "eval_path": f"data/{party}-eval.csv", "label": "target"}})
    federation.wait_for_parties(list(PARTIES))
    return data


def run_horizontal(federation: LocalFederation, data_dir: Path, rounds: int, console: Console) -> dict[str, Any]:
    data = start_horizontal_parties(federation, data_dir)
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


def prepare_vertical_data(directory: Path) -> dict[str, Any]:
    """Guest: id, label and 10 features; host: id and the other 20. Each side lacks some of
    the other's customers and lists its rows in its own order, so PSI has work to do."""
    data = load_breast_cancer()
    rng = np.random.default_rng(SEED)
    ids = np.array([f"c{rng.integers(10**8):08d}{i:03d}" for i in range(len(data.target))])
    missing_at_guest, missing_at_host = np.split(rng.choice(len(ids), 40, replace=False), 2)
    guest_rows = rng.permutation(np.setdiff1d(np.arange(len(ids)), missing_at_guest))
    host_rows = rng.permutation(np.setdiff1d(np.arange(len(ids)), missing_at_host))
    directory.mkdir(parents=True, exist_ok=True)
    _write_columns(directory / f"{GUEST}.csv", ["id", "target", *(f"g{i}" for i in range(10))],
                   [[ids[r], int(data.target[r]), *data.data[r, :10]] for r in guest_rows])
    _write_columns(directory / f"{HOST}.csv", ["id", *(f"h{i}" for i in range(20))],
                   [[ids[r], *data.data[r, 10:]] for r in host_rows])
    shared = np.intersect1d(guest_rows, host_rows)
    return {"X": data.data[shared], "y": data.target[shared], "intersection": len(shared)}


def _write_columns(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[f"{v:.10g}" if isinstance(v, float) else v for v in row] for row in rows])


def vertical_centralized_auc(data: dict[str, Any], alpha: float) -> float:
    """scikit-learn on the joined table, same L2 penalty: FATE's alpha/2 ||w||^2 on the mean loss is C = 1/(alpha n)."""
    X = StandardScaler().fit_transform(data["X"])
    model = LogisticRegression(C=1.0 / (alpha * len(X)), max_iter=10_000).fit(X, data["y"])
    return float(roc_auc_score(data["y"], model.predict_proba(X)[:, 1]))


def run_vertical(federation: LocalFederation, data_dir: Path, console: Console) -> dict[str, Any]:
    data = prepare_vertical_data(data_dir)
    federation.start_party(GUEST, {"breast_guest": {"path": f"data/{GUEST}.csv", "label": "target",
                                                    "id_column": "id", "eval_fraction": 0}}, organisation="A bank")
    federation.start_party(HOST, {"breast_host": {"path": f"data/{HOST}.csv", "id_column": "id", "eval_fraction": 0}},
                           role="host", organisation="A telecom")
    federation.wait_for_parties([GUEST, HOST])
    started = time.monotonic()
    with federation.admin() as admin:
        train = parse_job_spec({"name": "breast-cancer-hetero-lr", "vertical": {
            "guest": GUEST, "hosts": [HOST], "guest_dataset": "breast_guest", "host_dataset": "breast_host",
            "params": VERTICAL_PARAMS}})
        job_id = admin.submit(train)
        console.print(f"vertical job {job_id}: hetero logistic regression, guest {GUEST}, host {HOST}, arbiter")
        trained = follow_job(admin, job_id, console)
        if trained.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"vertical job {job_id} ended {pb.JobState.Name(trained.state)}: {trained.reason}")
        seconds = time.monotonic() - started
        predict = pb.JobSpec(name="breast-cancer-hetero-lr-score", vertical_predict=vertical_pb2.VerticalPredictSpec(
            guest=GUEST, hosts=[HOST], guest_dataset="breast_guest", host_dataset="breast_host", model_id=job_id,
            scores_path=SCORES_PATH))
        scored = admin.wait(admin.submit(predict), 300)
        if scored.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"vertical scoring ended {pb.JobState.Name(scored.state)}: {scored.reason}")
    result, metrics = trained.vertical_result, dict(scored.vertical_result.metrics)
    central = vertical_centralized_auc(data, VERTICAL_PARAMS["alpha"])
    scores_file = federation.workdir / "party-state" / GUEST / "scores" / SCORES_PATH  # the guest's own file
    with open(scores_file, newline="") as handle:
        scores_rows = sum(1 for _ in csv.reader(handle)) - 1
    return {
        "job_id": job_id, "auc": metrics["auc"], "ks": metrics["ks"], "accuracy": metrics["accuracy"],
        "train_auc": result.metrics["auc"], "train_ks": result.metrics["ks"], "scores_rows": scores_rows,
        "centralized_auc": central, "intersection": result.intersection, "expected_intersection": data["intersection"],
        "epochs": result.epochs, "seconds": round(seconds, 2), "seconds_per_epoch": round(translate.seconds(result.duration) / max(result.epochs, 1), 3),
        "within_tolerance": abs(metrics["auc"] - central) <= VERTICAL_AUC_TOLERANCE
        and result.intersection == data["intersection"],
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """A narrow comparison table (it must read in an 80-column terminal), then the checks."""
    h, v = report.get("horizontal"), report.get("vertical")
    table = Table(title="federated vs centralized, breast cancer")
    for column in ("job", "AUC", "central AUC", "accuracy", "central acc.", "rounds", "s"):
        table.add_column(column, justify="left" if column == "job" else "right")
    if h:
        table.add_row("horizontal (test)", f"{h['auc']:.4f}", f"{h['centralized_auc']:.4f}", f"{h['accuracy']:.4f}",
                      f"{h['centralized_accuracy']:.4f}", str(h["rounds"]), f"{h['seconds']:.1f}")
    if v:
        table.add_row("vertical (train)", f"{v['auc']:.4f}", f"{v['centralized_auc']:.4f}", f"{v['accuracy']:.4f}", "",
                      str(v["epochs"]), f"{v['seconds']:.1f}")
    if h or v:
        console.print(table)
    if h:
        console.print(
        f"horizontal: FedAvg logistic regression over {len(h['party_rows'])} parties "
        f"(rows {', '.join(map(str, h['party_rows'].values()))}; positive share "
        f"{', '.join(map(str, h['party_positive_share'].values()))}), scored on the held-out 20%; "
        f"|AUC - central| = {abs(h['auc'] - h['centralized_auc']):.4f} (tolerance {AUC_TOLERANCE})"
        )
    if v:
        console.print(
        f"vertical: hetero logistic regression, {GUEST} (label + 10 features) and {HOST} (20 features), "
        f"{v['intersection']} rows aligned by PSI, {v['seconds_per_epoch']:.3f} s/epoch; "
        f"train AUC {v['train_auc']:.4f}, KS {v['train_ks']:.4f} (the guest's, at the end of training); "
        f"{v['scores_rows']} per-id scores kept on {GUEST}; "
        f"|AUC - central| = {abs(v['auc'] - v['centralized_auc']):.4f} (tolerance {VERTICAL_AUC_TOLERANCE})"
        )
    if report.get("resilience"):
        failed = [name for name, ok in report["resilience"]["checks"].items() if not ok]
        console.print(f"resilience: {'every check held' if not failed else 'failed: ' + ', '.join(failed)}")
    console.print("all checks passed" if report["ok"] else "a check failed", style=None if report["ok"] else "bold red")


MODES = ("horizontal", "vertical", "resilience")
"""The demo's parts, in the order they run; each writes the report section of its name."""


def run_demo(workdir: Path | None, rounds: int = 30, console: Console | None = None,
             modes: Sequence[str] = MODES) -> dict[str, Any]:
    """Run the demo's ``modes`` and return the report (``ok`` says whether every check held)."""
    console = console or Console()
    scratch = None if workdir is not None else tempfile.TemporaryDirectory(prefix="fedsuite-demo-")
    base = workdir if workdir is not None else Path(scratch.name)  # type: ignore[union-attr]
    try:
        with LocalFederation(base) as federation:
            console.print(f"work directory: {base}")
            federation.init_certs(["coordinator", "arbiter", *PARTIES, GUEST, HOST])
            federation.start_arbiter()
            federation.start_coordinator()
            report: dict[str, Any] = {"modes": [m for m in MODES if m in modes]}
            for mode in report["modes"]:
                if mode == "horizontal":
                    report[mode] = run_horizontal(federation, base / "data", rounds, console)
                elif mode == "vertical":
                    report[mode] = run_vertical(federation, base / "data", console)
                else:
                    start_horizontal_parties(federation, base / "data")
                    report[mode] = run_resilience(federation, console)
        report["ok"] = all(bool(report[m]["within_tolerance"]) for m in report["modes"])
        print_report(report, console)
        return report
    finally:
        if scratch is not None:
            scratch.cleanup()

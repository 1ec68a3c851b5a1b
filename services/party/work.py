"""What a party does with its own rows: statistics, local training, evaluation.

Plain values in, plain values out; the servicer handles the wire. Every check that
protects the party's data or the global model happens here, with exceptions the
servicer maps to gRPC status codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcore.crypto.paillier import EncryptedArray, PublicKey
from fedcore.data import Dataset, feature_statistics, standardize
from fedcore.ml.metrics import Metrics, evaluate
from fedcore.ml.models import Model, ModelConfig, Weights, build_model
from fedcore.ml.training import LocalResult, TrainConfig, train_local

from fedsuite.party.datasets import DatasetCatalog
from fedsuite.predict import checked_scores_path, score_columns, write_scores


class UnknownDataset(KeyError):
    """The party holds no dataset of that name (NOT_FOUND)."""


class TaskMismatch(ValueError):
    """The task does not fit the party's data or the job's history (FAILED_PRECONDITION)."""


@dataclass(frozen=True)
class Task:
    """One round's instructions, already translated from the wire."""

    job_id: str
    round: int
    dataset: str
    model: ModelConfig
    train: TrainConfig
    feature_mean: np.ndarray | None
    feature_scale: np.ndarray | None
    encryption: tuple[PublicKey, int] | None = None
    """Secure aggregation: the arbiter's key and the fixed-point exponent of the encrypted update."""
    all_rows: bool = False
    """Evaluate: score training and held-out rows (a predict job), not only the held-out ones."""
    scores_path: str = ""
    """Evaluate: also write each row's scores here, under the party's scores directory."""


@dataclass(frozen=True)
class Statistics:
    """Aggregates of the training rows for federated standardisation."""

    n_rows: int
    n_features: int
    feature_sum: np.ndarray
    feature_sum_sq: np.ndarray
    class_labels: list[int]


class LocalWork:
    """The party's learning work over its catalog; remembers each job's last round."""

    def __init__(self, catalog: DatasetCatalog) -> None:
        self._catalog = catalog
        self._last_round: dict[str, int] = {}

    def dataset(self, name: str) -> Dataset:
        try:
            return self._catalog.get(name)
        except KeyError:
            raise UnknownDataset(f"this party holds no dataset {name!r}") from None

    def statistics(self, name: str) -> Statistics:
        data = self.dataset(name)
        total, total_sq = feature_statistics(data.X)
        labels = sorted({int(v) for v in np.unique(data.y)}) if data.y is not None else []
        return Statistics(len(data.X), data.X.shape[1], total, total_sq, labels)

    def check(self, task: Task) -> tuple[Model, Dataset]:
        """The task's model and dataset, after checking the task fits both."""
        data = self.dataset(task.dataset)
        if task.round < 1:
            raise ValueError(f"round must be >= 1 (got {task.round})")
        if task.model.type != "vector" and task.model.n_features != data.X.shape[1]:
            raise TaskMismatch(
                f"model expects {task.model.n_features} features, dataset {task.dataset!r} has {data.X.shape[1]}"
            )
        if data.y is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no label column; horizontal training needs labels")
        if data.y.size and int(data.y.max()) >= task.model.n_classes:
            raise TaskMismatch(f"dataset {task.dataset!r} has label {int(data.y.max())} >= n_classes={task.model.n_classes}")
        for name, values in (("feature_mean", task.feature_mean), ("feature_scale", task.feature_scale)):
            if values is not None and (len(values) != data.X.shape[1] or not np.isfinite(values).all()):
                raise ValueError(f"{name} must hold {data.X.shape[1]} finite values")
        if task.feature_scale is not None and (task.feature_scale <= 0).any():
            raise ValueError("feature_scale must be positive")
        return build_model(task.model), data

    def _features(self, task: Task, X: np.ndarray) -> np.ndarray:
        if task.feature_mean is None or task.feature_scale is None:
            return X
        return standardize(X, task.feature_mean, task.feature_scale)

    def train(self, task: Task, model: Model, weights: Weights) -> LocalResult:
        """Train from the global weights; refuses a round older than one already trained for the job."""
        last = self._last_round.get(task.job_id, 0)
        if task.round < last:
            raise TaskMismatch(f"round {task.round} of job {task.job_id} is older than round {last}, already trained")
        self._last_round[task.job_id] = task.round
        data = self.dataset(task.dataset)
        return train_local(model, weights, self._features(task, data.X), data.y, task.train)

    def evaluate(self, task: Task, model: Model, weights: Weights, scores_dir: Path) -> tuple[Metrics, int]:
        """Metrics of the model on the held-out rows (or all rows), and how many rows' scores were written."""
        data = self.dataset(task.dataset)
        if task.all_rows:
            X, y = np.concatenate([data.X, data.X_eval]), _joined(data.y, data.y_eval)
            ids = _joined(data.ids, data.ids_eval)
        else:
            X, y, ids = data.X_eval, data.y_eval, data.ids_eval
        if y is None:
            raise TaskMismatch(f"dataset {task.dataset!r} has no label column to evaluate with")
        if len(X) == 0:
            raise TaskMismatch(f"dataset {task.dataset!r} has no held-out rows to evaluate on")
        features = self._features(task, X)
        metrics = evaluate(model, weights, features, y)
        if not task.scores_path:
            return metrics, 0
        columns = score_columns(model.predict_proba(weights, features), ids, y)
        return metrics, write_scores(scores_dir / checked_scores_path(task.scores_path), columns)


def _joined(train: np.ndarray | None, held_out: np.ndarray | None) -> np.ndarray | None:
    """Training then held-out values of one column (None when the dataset has no such column)."""
    return None if train is None or held_out is None else np.concatenate([train, held_out])


def encrypted_update(result: LocalResult, public_key: PublicKey, exponent: int) -> list[EncryptedArray]:
    """Enc(n_k * w_k) per tensor (flattened), fixed-point at the job's exponent, so the coordinator
    can add the parties' updates without reading any of them."""
    return [public_key.encrypt(np.asarray(w, dtype=np.float64).reshape(-1) * result.n_samples, exponent=exponent)
            for w in result.weights]

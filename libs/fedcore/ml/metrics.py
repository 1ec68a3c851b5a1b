"""Evaluation metrics a party computes locally and the coordinator averages by sample count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from fedcore.ml.models import Model, VectorModel, Weights


@dataclass(frozen=True)
class Metrics:
    """Metrics on n_samples rows; any field may be nan where it is undefined."""

    loss: float
    accuracy: float
    auc: float
    n_samples: int


def evaluate(model: Model, weights: Weights, X: np.ndarray, y: np.ndarray) -> Metrics:
    """Log-loss, accuracy and AUC of `weights` on (X, y).

    AUC is nan when it is undefined: fewer than two classes present in y. Multiclass AUC is the
    macro one-vs-rest mean over the classes present in y. Vector models have nothing to predict:
    loss 0, accuracy 0, AUC nan. With 0 rows every metric is nan.
    """
    n = len(X)
    if isinstance(model, VectorModel):
        return Metrics(loss=0.0, accuracy=0.0, auc=math.nan, n_samples=n)
    if n == 0:
        return Metrics(loss=math.nan, accuracy=math.nan, auc=math.nan, n_samples=0)
    proba = model.predict_proba(weights, X)
    labels = np.arange(model.config.n_classes)
    return Metrics(
        loss=float(log_loss(y, proba, labels=labels)),
        accuracy=float(accuracy_score(y, proba.argmax(axis=1))),
        auc=_auc(np.asarray(y), proba),
        n_samples=n,
    )


def weighted_mean(metrics: Sequence[Metrics]) -> Metrics:
    """Combine parties' metrics, weighting each by its n_samples; nan AUCs do not count."""
    n_total = sum(m.n_samples for m in metrics)
    return Metrics(
        loss=_weighted([(m.loss, m.n_samples) for m in metrics]),
        accuracy=_weighted([(m.accuracy, m.n_samples) for m in metrics]),
        auc=_weighted([(m.auc, m.n_samples) for m in metrics if not math.isnan(m.auc)]),
        n_samples=n_total,
    )


def _weighted(pairs: list[tuple[float, int]]) -> float:
    """Sample-weighted mean; parties with no rows carry no weight (and may report nan)."""
    pairs = [(value, n) for value, n in pairs if n > 0]
    total = sum(n for _, n in pairs)
    return sum(value * n for value, n in pairs) / total if total else math.nan


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return math.nan
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))

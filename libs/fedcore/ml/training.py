"""Local training: what a party does with the global weights between two aggregation rounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcore.ml.models import Model, VectorModel, Weights, check_weights

PENALTIES = ("none", "l2", "l1")


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch SGD settings for one round of local training."""

    local_epochs: int = 1
    batch_size: int = 32  # <= 0: full batch
    learning_rate: float = 0.1
    penalty: str = "l2"  # "none" | "l2" | "l1"; kernels only, never biases
    alpha: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ValueError(f"local_epochs must be >= 1, got {self.local_epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"unknown penalty {self.penalty!r}; expected one of {list(PENALTIES)}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")


@dataclass(frozen=True, eq=False)
class LocalResult:
    """A party's update; n_samples weights it in FedAvg."""

    weights: Weights
    n_samples: int
    train_loss: float  # mean data loss (no penalty) over the last local epoch


def train_local(model: Model, weights: Weights, X: np.ndarray, y: np.ndarray, config: TrainConfig) -> LocalResult:
    """Run `config.local_epochs` epochs of SGD from `weights`; the input weights are left untouched."""
    check_weights(model, weights)
    rng = np.random.default_rng(config.seed)
    if isinstance(model, VectorModel):
        return LocalResult(_perturb(weights, config.learning_rate, rng), len(X), 0.0)
    n = len(X)
    if n == 0:
        raise ValueError("cannot train on 0 rows")
    batch_size = n if config.batch_size <= 0 else config.batch_size
    params = [np.array(w, dtype=np.float64) for w in weights]
    epoch_loss = 0.0
    for _ in range(config.local_epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            loss, grads = model.loss_and_grad(params, X[rows], y[rows])
            _sgd_step(params, grads, config)
            total += loss * len(rows)
        epoch_loss = total / n
    return LocalResult([p.astype(np.float32) for p in params], n, epoch_loss)


def _sgd_step(params: Weights, grads: Weights, config: TrainConfig) -> None:
    """One in-place step; L2 is part of the gradient, L1 a proximal soft-threshold after it."""
    lr = config.learning_rate
    for param, grad in zip(params, grads):
        is_kernel = param.ndim >= 2
        if is_kernel and config.penalty == "l2":
            grad = grad + config.alpha * param
        param -= lr * grad
        if is_kernel and config.penalty == "l1":
            np.copyto(param, np.sign(param) * np.maximum(np.abs(param) - lr * config.alpha, 0.0))


def _perturb(weights: Weights, learning_rate: float, rng: np.random.Generator) -> Weights:
    """weights + learning_rate * N(0, 1), all in float32 so 10 M parameters stay cheap."""
    perturbed: Weights = []
    for tensor in weights:
        noise = rng.standard_normal(tensor.shape, dtype=np.float32)
        noise *= np.float32(learning_rate)
        noise += tensor
        perturbed.append(noise)
    return perturbed

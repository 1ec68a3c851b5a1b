"""Models as lists of float32 ndarrays, so they travel as plain tensors and aggregate by arithmetic.

Dense models (logistic regression, MLP) store their layers as alternating kernels (2-D) and
biases (1-D); penalties apply to kernels only. Arithmetic runs in float64 for stability.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

Weights = list[np.ndarray]


@dataclass(frozen=True)
class ModelConfig:
    """What a job says about its model; `build_model` validates it."""

    type: str  # "logistic_regression" | "mlp" | "vector"
    n_features: int
    n_classes: int  # 2 -> one sigmoid output; > 2 -> softmax over n_classes outputs
    hidden_units: tuple[int, ...] = ()  # mlp only
    vector_size: int = 0  # vector only


class Model(abc.ABC):
    """A model family: knows its tensor shapes, how to initialise, predict and differentiate."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def shapes(self) -> list[tuple[int, ...]]:
        """Shape of every weight tensor, in order."""

    @abc.abstractmethod
    def init_weights(self, rng: np.random.Generator) -> Weights:
        """Fresh float32 weights; the rng makes initialisation reproducible."""

    @abc.abstractmethod
    def predict_proba(self, weights: Weights, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, n_classes); rows sum to 1."""

    @abc.abstractmethod
    def loss_and_grad(self, weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        """Mean cross-entropy on (X, y) and its float64 gradient with respect to every tensor."""


class _DenseNetwork(Model):
    """Fully connected layers with ReLU between them and a sigmoid or softmax head."""

    def __init__(self, config: ModelConfig) -> None:
        _require(config.n_features >= 1, f"n_features must be >= 1, got {config.n_features}")
        _require(config.n_classes >= 2, f"n_classes must be >= 2, got {config.n_classes}")
        _require(config.vector_size == 0, f"vector_size applies to 'vector' models only, got {config.vector_size}")
        super().__init__(config)

    @property
    def _widths(self) -> list[int]:
        """Input width, hidden widths, output width; a binary head has a single logit."""
        n_out = 1 if self.config.n_classes == 2 else self.config.n_classes
        return [self.config.n_features, *self.config.hidden_units, n_out]

    def shapes(self) -> list[tuple[int, ...]]:
        widths = self._widths
        shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        return shapes

    def predict_proba(self, weights: Weights, X: np.ndarray) -> np.ndarray:
        _, logits = self._forward(weights, X)
        if self.config.n_classes == 2:
            p = _sigmoid(logits[:, 0])
            return np.column_stack([1.0 - p, p])
        return np.exp(_log_softmax(logits))

    def loss_and_grad(self, weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        y = _check_labels(y, len(X), self.config.n_classes)
        params = [np.asarray(w, dtype=np.float64) for w in weights]
        activations, logits = self._forward(params, X)
        if self.config.n_classes == 2:
            z = logits[:, 0]
            loss = np.mean(np.logaddexp(0.0, z) - y * z)
            delta = (_sigmoid(z) - y)[:, None]
        else:
            log_p = _log_softmax(logits)
            loss = -np.mean(log_p[np.arange(len(y)), y])
            delta = np.exp(log_p)
            delta[np.arange(len(y)), y] -= 1.0
        return float(loss), self._backward(params, activations, delta / len(y))

    def _forward(self, weights: Weights, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Logits plus the input of every layer, which the backward pass needs."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.config.n_features:
            raise ValueError(f"X must have shape (n, {self.config.n_features}), got {X.shape}")
        activations = [X]
        n_layers = len(weights) // 2
        for layer in range(n_layers - 1):
            z = activations[-1] @ weights[2 * layer] + weights[2 * layer + 1]
            activations.append(np.maximum(z, 0.0))
        logits = activations[-1] @ weights[-2] + weights[-1]
        return activations, logits

    @staticmethod
    def _backward(weights: Weights, activations: list[np.ndarray], delta: np.ndarray) -> Weights:
        """Backpropagate d(loss)/d(logits) through the layers."""
        grads: Weights = []
        for layer in reversed(range(len(activations))):
            grads[:0] = [activations[layer].T @ delta, delta.sum(axis=0)]
            if layer > 0:
                delta = (delta @ weights[2 * layer].T) * (activations[layer] > 0)
        return grads


class LogisticRegression(_DenseNetwork):
    """Binary (sigmoid) or multinomial (softmax) logistic regression: [kernel, bias]."""

    def __init__(self, config: ModelConfig) -> None:
        _require(not config.hidden_units, f"logistic_regression takes no hidden_units, got {config.hidden_units}")
        super().__init__(config)

    def init_weights(self, rng: np.random.Generator) -> Weights:
        """Zeros: the loss is convex, so there is no symmetry to break."""
        return [np.zeros(shape, dtype=np.float32) for shape in self.shapes()]


class MLP(_DenseNetwork):
    """Multi-layer perceptron with ReLU hidden layers: [kernel, bias] per layer."""

    def __init__(self, config: ModelConfig) -> None:
        _require(len(config.hidden_units) >= 1, "mlp needs at least one entry in hidden_units")
        _require(all(h >= 1 for h in config.hidden_units), f"hidden_units must be >= 1, got {config.hidden_units}")
        super().__init__(config)

    def init_weights(self, rng: np.random.Generator) -> Weights:
        """He-normal kernels before ReLUs, Glorot-normal on the output layer, zero biases."""
        shapes = self.shapes()
        weights: Weights = []
        for index, shape in enumerate(shapes):
            if len(shape) == 1:
                weights.append(np.zeros(shape, dtype=np.float32))
                continue
            fan_in, fan_out = shape
            is_output = index == len(shapes) - 2
            std = np.sqrt(2.0 / (fan_in + fan_out)) if is_output else np.sqrt(2.0 / fan_in)
            weights.append((rng.standard_normal(shape) * std).astype(np.float32))
        return weights


class VectorModel(Model):
    """One flat tensor and no predictor: a payload for plumbing tests and throughput benchmarks."""

    def __init__(self, config: ModelConfig) -> None:
        _require(config.vector_size >= 1, f"vector_size must be >= 1, got {config.vector_size}")
        super().__init__(config)

    def shapes(self) -> list[tuple[int, ...]]:
        return [(self.config.vector_size,)]

    def init_weights(self, rng: np.random.Generator) -> Weights:
        return [np.zeros(self.config.vector_size, dtype=np.float32)]

    def predict_proba(self, weights: Weights, X: np.ndarray) -> np.ndarray:
        raise TypeError("a 'vector' model does not depend on data and cannot predict")

    def loss_and_grad(self, weights: Weights, X: np.ndarray, y: np.ndarray) -> tuple[float, Weights]:
        raise TypeError("a 'vector' model does not depend on data and has no loss")


_FAMILIES: dict[str, type[Model]] = {
    "logistic_regression": LogisticRegression,
    "mlp": MLP,
    "vector": VectorModel,
}


def build_model(config: ModelConfig) -> Model:
    """The model a config names; ValueError for an unknown type or sizes that cannot work."""
    family = _FAMILIES.get(config.type)
    if family is None:
        raise ValueError(f"unknown model type {config.type!r}; expected one of {sorted(_FAMILIES)}")
    return family(config)


def check_weights(model: Model, weights: Weights) -> None:
    """Reject weights that would poison a model: wrong tensor count or shape, NaN or Inf."""
    shapes = model.shapes()
    if len(weights) != len(shapes):
        raise ValueError(
            f"expected {len(shapes)} weight tensors, got {len(weights)} "
            f"(tensor {min(len(weights), len(shapes))} is the first without a counterpart)"
        )
    for index, (tensor, shape) in enumerate(zip(weights, shapes)):
        tensor = np.asarray(tensor)
        if tensor.shape != shape:
            raise ValueError(f"weight tensor {index}: expected shape {shape}, got {tensor.shape}")
        if not np.isfinite(tensor).all():
            raise ValueError(f"weight tensor {index} contains NaN or Inf")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_labels(y: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Labels as int64 in 0..n_classes-1, one per row; out-of-range labels would index garbage."""
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise ValueError(f"y must have shape ({n_rows},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if n_rows and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Overflow-free logistic function."""
    return np.exp(-np.logaddexp(0.0, -z))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

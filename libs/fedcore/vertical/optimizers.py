"""FATE's optimizers and penalties, each party applying them to its own weights.

Every optimizer here is element-wise, so a party updating only its own block of the
weight vector takes exactly the step a single optimizer over all parties' weights would.
One update, as FATE 1.x's ``_Optimizer.update_model`` does it:

    g' = g + alpha w_p                      (L2 only; w_p: every weight but the intercept)
    w  = w - step(g', lr_t)                 (the optimizer's delta)
    w_p = sign(w_p) max(0, |w_p| - alpha lr_t)   (L1 only: the proximal soft threshold)

lr_t is HeteroLRParams.learning_rate_at(epoch). FATE thresholds L1 by alpha lr / sqrt(t)
with t counted from 0, which is infinite in the first epoch; the proximal step of the
rate actually used, alpha lr_t, is the textbook one (Parikh & Boyd, "Proximal
Algorithms", 2014, section 6.5.2) and is what we use.

Constants are FATE's: RMSProp rho = 0.99 and 1e-6 under the root; Adagrad 1e-7 beside the
root; Adam beta1 = 0.9, beta2 = 0.999, eps = 1e-8; Nesterov momentum 0.9.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from fedcore.vertical.params import HeteroLRParams


class Penalty:
    """alpha ||w_p||_1 or (alpha / 2) ||w_p||^2 over the penalised weights (never the intercept)."""

    def __init__(self, kind: str, alpha: float, penalised: np.ndarray) -> None:
        self.kind = kind
        self.alpha = alpha
        self.penalised = np.asarray(penalised, dtype=bool)

    def value(self, weights: np.ndarray) -> float:
        """The penalty term of the loss."""
        w = weights[self.penalised]
        if self.kind == "L2":
            return 0.5 * self.alpha * float(w @ w)
        if self.kind == "L1":
            return self.alpha * float(np.abs(w).sum())
        return 0.0

    def gradient(self, weights: np.ndarray) -> np.ndarray:
        """alpha w_p for L2 (added to the data gradient before the optimizer), else zeros."""
        if self.kind == "L2":
            return self.alpha * np.where(self.penalised, weights, 0.0)
        return np.zeros_like(weights)

    def proximal(self, weights: np.ndarray, learning_rate: float) -> np.ndarray:
        """Soft thresholding by alpha lr for L1 (exact zeros: sparsity), identity otherwise."""
        if self.kind != "L1":
            return weights
        shrunk = np.sign(weights) * np.maximum(np.abs(weights) - self.alpha * learning_rate, 0.0)
        return np.where(self.penalised, shrunk, weights)


class Optimizer(ABC):
    """One party's optimizer state over its own weights."""

    def __init__(self, params: HeteroLRParams, penalty: Penalty) -> None:
        self.params = params
        self.penalty = penalty

    def update(self, weights: np.ndarray, gradient: np.ndarray, epoch: int) -> np.ndarray:
        """New weights after one step on the data ``gradient`` (module docstring)."""
        learning_rate = self.params.learning_rate_at(epoch)
        delta = self.step(gradient + self.penalty.gradient(weights), learning_rate)
        return self.penalty.proximal(weights - delta, learning_rate)

    @abstractmethod
    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        """The delta to subtract from the weights for this (penalised) gradient."""


class SGD(Optimizer):
    """delta = lr g."""

    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        return learning_rate * gradient


class RMSProp(Optimizer):
    """m = rho m + (1 - rho) g^2; delta = lr g / sqrt(m + 1e-6) (Tieleman & Hinton 2012, lecture 6.5)."""

    RHO = 0.99
    EPSILON = 1e-6

    def __init__(self, params: HeteroLRParams, penalty: Penalty) -> None:
        super().__init__(params, penalty)
        self.mean_square: np.ndarray | None = None

    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        previous = np.zeros_like(gradient) if self.mean_square is None else self.mean_square
        self.mean_square = self.RHO * previous + (1 - self.RHO) * np.square(gradient)
        return learning_rate * gradient / np.sqrt(self.mean_square + self.EPSILON)


class Adagrad(Optimizer):
    """s = s + g^2; delta = lr g / (sqrt(s) + 1e-7) (Duchi, Hazan & Singer 2011)."""

    EPSILON = 1e-7

    def __init__(self, params: HeteroLRParams, penalty: Penalty) -> None:
        super().__init__(params, penalty)
        self.sum_square: np.ndarray | None = None

    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        previous = np.zeros_like(gradient) if self.sum_square is None else self.sum_square
        self.sum_square = previous + np.square(gradient)
        return learning_rate * gradient / (np.sqrt(self.sum_square) + self.EPSILON)


class Adam(Optimizer):
    """Bias-corrected moments: delta = lr m_hat / (sqrt(v_hat) + 1e-8) (Kingma & Ba 2015, Algorithm 1)."""

    BETA1 = 0.9
    BETA2 = 0.999
    EPSILON = 1e-8

    def __init__(self, params: HeteroLRParams, penalty: Penalty) -> None:
        super().__init__(params, penalty)
        self.first: np.ndarray | None = None
        self.second: np.ndarray | None = None
        self.steps = 0

    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        zeros = np.zeros_like(gradient)
        self.steps += 1
        self.first = self.BETA1 * (zeros if self.first is None else self.first) + (1 - self.BETA1) * gradient
        self.second = (self.BETA2 * (zeros if self.second is None else self.second)
                       + (1 - self.BETA2) * np.square(gradient))
        first_hat = self.first / (1 - self.BETA1**self.steps)
        second_hat = self.second / (1 - self.BETA2**self.steps)
        return learning_rate * first_hat / (np.sqrt(second_hat) + self.EPSILON)


class NesterovMomentumSGD(Optimizer):
    """v' = mu v - lr g; delta = mu v - (1 + mu) v' (Sutskever et al. 2013, in Bengio et al.'s form)."""

    MOMENTUM = 0.9

    def __init__(self, params: HeteroLRParams, penalty: Penalty) -> None:
        super().__init__(params, penalty)
        self.velocity: np.ndarray | None = None

    def step(self, gradient: np.ndarray, learning_rate: float) -> np.ndarray:
        previous = np.zeros_like(gradient) if self.velocity is None else self.velocity
        self.velocity = self.MOMENTUM * previous - learning_rate * gradient
        return self.MOMENTUM * previous - (1 + self.MOMENTUM) * self.velocity


OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "rmsprop": RMSProp,
    "adagrad": Adagrad,
    "adam": Adam,
    "nesterov_momentum_sgd": NesterovMomentumSGD,
}


def make_optimizer(params: HeteroLRParams, penalised: np.ndarray) -> Optimizer:
    """The optimizer ``params`` names, with its penalty over the ``penalised`` weights."""
    return OPTIMIZER_CLASSES[params.optimizer](params, Penalty(params.penalty, params.alpha, penalised))

"""Hetero (vertical) logistic regression with an arbiter: DESIGN.md "Vertical", steps 0-3.

The guest holds labels y in {0, 1} and features X_g; each host h holds features X_h of
the same people; the arbiter holds the Paillier private key. Per mini-batch (every
ciphertext under the arbiter's key, [[.]]):

    host h   [[u_h]] = Enc(X_h w_h), [[s_h]] = Enc(sum_i u_h,i^2)  -> guest     encrypted_forward
    guest    [[d]] = 0.25 [[u]] + 0.5 - y,  u = z + sum_h u_h,
             z = X_g w_g + b, rerandomised                          -> hosts     encrypted_residual
    each     [[g]] = X^T [[d]] / n + mask r, packed                 -> arbiter   masked_gradient
    arbiter  decrypts g + r (integer mantissas)                     -> party     decrypt_gradients
    each     g = (g + r) - r; w <- optimizer(w, g)                               unmask_and_update
    guest    [[sum_i loss_i]] (Taylor, below)                       -> arbiter   encrypted_loss
    arbiter  decides convergence once per epoch                     -> everyone  conclude_epoch

d is the first-order Taylor form of the logistic gradient sigma(u) - y (sigma(u) ~ 1/2 + u/4).
The loss is the second-order Taylor form of log(1 + e^u) - y u around u = 0:

    loss_i = log 2 - 0.5 y'_i u_i + 0.125 u_i^2,      y' = 2y - 1 in {-1, 1}

(DESIGN.md writes y; with y in {0, 1} the expansion gives 2y - 1, which is FATE's y in
{-1, 1}). The guest computes its batch sum encrypted, from its plaintext z and the hosts'
ciphertexts: sum_i u_i^2 = sum_i z_i^2 + 2 sum_i z_i U_i + sum_i U_i^2 with U = sum_h u_h, and

    sum_i U_i^2 = sum_h s_h + 2 sum_{j < h} <u_j, u_h>.

The cross terms between hosts cannot come from ciphertexts alone (Paillier has no
ciphertext product), so the guest sends host h the prefix [[u_1 + ... + u_{h-1}]] and
host h returns [[<u_1 + ... + u_{h-1}, u_h>]] (an encrypted inner product with its own
plaintext u_h), rerandomised; with one host there is no extra message. The loss is
computed on every batch, at that batch's weights; the epoch loss is the sum over batches
divided by the intersection size, plus each party's penalty weighted by its batch's share
(hosts send their penalty value, a scalar, to the arbiter).

Masking. The party's gradient mantissas are bounded by B (EncryptedArray tracks it); the
mask r_i is uniform in [0, 2^(bits(B) + SIGMA)), so g + r is within statistical distance
2^-SIGMA of r alone and the arbiter learns nothing of g. The arbiter returns the integer
mantissas of g + r, so the party subtracts r exactly.

Packing (BatchCrypt) puts k masked values of b = bits(B) + SIGMA + 2 bits in one
plaintext. It costs the party (k - 1) b squarings mod n^2 per packed ciphertext and saves
the arbiter k - 1 CRT decryptions, each about bits(n) squarings mod p^2 or q^2 (a third
of a squaring mod n^2, or less): it pays when 3 b < bits(n), and then also shrinks the
message k-fold. We pack exactly then.

Evaluation. Training ends, as FATE's does when an evaluation follows it, with one scoring
pass over the training rows: each host sends the guest its plaintext X_h w_h at the final
weights (what a predict job on those rows sends), and the guest reports the train AUC, KS,
accuracy, precision and recall on its labels. Per epoch this is not possible without more
leakage: during training the guest holds u_h only encrypted, and a plaintext u_h every epoch
would give it one linear equation in each row's host features per epoch.

Privacy, semi-honest and without collusion with the arbiter: a host receives only
ciphertexts (the residual, the prefix), its own masked gradient and stop decisions; the
guest receives only ciphertexts from hosts until the final scoring pass (then each host's
X_h w_h, one value per row); the arbiter receives only masked gradients,
the loss ciphertext and scalars (penalties, weight-step norms), and learns the
intersection size and the loss. The guest rerandomises [[d]] before sending it, because
a host knows the obfuscators of its own [[u_h]]. Tags are unique per (epoch, batch, step).

Mini-batches are identical on all sides: a fresh permutation per epoch from a generator
seeded with params.seed (batch_size -1: one batch of all rows). Each side standardises
its own columns over its aligned rows (the scaler is saved in its model).
"""

from __future__ import annotations

import math
import secrets
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

from fedcore.crypto.fixedpoint import FLOAT_PRECISION, FixedPoint
from fedcore.crypto.paillier import (
    EncryptedArray,
    ObfuscatorPool,
    PackedArray,
    Packing,
    PrivateKey,
    PublicKey,
    generate_keypair,
)
from fedcore.crypto.psi import DEFAULT_KEY_BITS as PSI_DEFAULT_KEY_BITS
from fedcore.data import combine_statistics, feature_statistics, standardize
from fedcore.federation import FederationContext, ProtocolError
from fedcore.vertical.alignment import Alignment, align_guest, align_host
from fedcore.vertical.optimizers import Optimizer, make_optimizer
from fedcore.vertical.params import HeteroLRParams

#: Statistical security of the gradient masks, in bits.
SIGMA = 40
#: Most obfuscators a party precomputes ahead of need.
_POOL_CAPACITY = 8192


# ---------------------------------------------------------------------------------------------
# What training produces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GuestModel:
    """The guest's half of the split model: weights on its standardised columns, and the intercept."""

    weights: np.ndarray
    intercept: float
    mean: np.ndarray
    scale: np.ndarray

    def decision(self, X: np.ndarray) -> np.ndarray:
        """The guest's part of the linear score, intercept included."""
        return standardize(X, self.mean, self.scale) @ self.weights + self.intercept

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"weights": self.weights.tolist(), "intercept": self.intercept, "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> GuestModel:
        """Inverse of to_dict; other keys (a store's metadata) are ignored; bad values raise ValueError."""
        weights, mean, scale = _model_vectors(document)
        intercept = document.get("intercept")
        if isinstance(intercept, bool) or not isinstance(intercept, int | float) or not math.isfinite(intercept):
            raise ValueError(f"intercept must be a finite number, got {intercept!r}")
        return cls(weights, float(intercept), mean, scale)


@dataclass(frozen=True, eq=False)
class HostModel:
    """A host's half of the split model: weights on its standardised columns."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def decision(self, X: np.ndarray) -> np.ndarray:
        """The host's part of the linear score, X_h w_h."""
        return standardize(X, self.mean, self.scale) @ self.weights

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"weights": self.weights.tolist(), "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> HostModel:
        """Inverse of to_dict; other keys are ignored; bad values raise ValueError."""
        return cls(*_model_vectors(document))


def _model_vectors(document: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = []
    for name in ("weights", "mean", "scale"):
        try:
            vector = np.asarray(document[name], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"model field {name!r} is missing or not a list of numbers") from None
        if vector.ndim != 1 or not np.all(np.isfinite(vector)):
            raise ValueError(f"model field {name!r} must be a flat list of finite numbers")
        vectors.append(vector)
    weights, mean, scale = vectors
    if not len(weights) == len(mean) == len(scale) or np.any(scale <= 0):
        raise ValueError("model weights, mean and scale must have one positive-scale entry per feature")
    return weights, mean, scale


@dataclass(frozen=True)
class TrainingReport:
    """How training went, as one role saw it.

    ``losses`` (one Taylor loss per epoch) is filled on the arbiter only: the loss is
    decrypted there and never sent to the parties. ``intersection`` is the aligned row
    count (the arbiter has it from the guest); ``align_seconds`` is 0 on the arbiter.
    ``metrics`` (evaluate_binary of the training rows at the final weights) is the guest's only.
    """

    epochs: int
    converged: bool
    losses: list[float] = field(default_factory=list)
    intersection: int = 0
    align_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EpochDone:
    """One finished epoch as a role saw it, for progress and metrics: its number (from 1), its
    wall-clock seconds and, on the arbiter, its loss."""

    epoch: int
    seconds: float
    loss: float | None = None


EpochHook = Callable[[EpochDone], None]


# ---------------------------------------------------------------------------------------------
# Pieces every role shares
# ---------------------------------------------------------------------------------------------


class BatchSchedule:
    """The mini-batches of every epoch, identical on all sides.

    Rows are the aligned rows 0 .. rows-1 in the canonical order. Each epoch draws a fresh
    permutation from a generator seeded with ``seed`` and cuts it into batches of
    ``batch_size`` (the last one shorter); batch_size -1, or one at least ``rows``, makes
    one batch of every row.
    """

    def __init__(self, rows: int, batch_size: int, seed: int) -> None:
        if rows < 1:
            raise ValueError("no aligned rows to train on: the intersection is empty")
        self.rows = rows
        self.batch_size = rows if batch_size == -1 else min(batch_size, rows)
        self._rng = np.random.default_rng(seed)

    @property
    def sizes(self) -> list[int]:
        """The batch sizes of every epoch."""
        return [min(self.batch_size, self.rows - start) for start in range(0, self.rows, self.batch_size)]

    def epoch(self) -> list[np.ndarray]:
        """The next epoch's batches, as arrays of row indices."""
        order = self._rng.permutation(self.rows)
        return [order[start : start + self.batch_size] for start in range(0, self.rows, self.batch_size)]


def _tag(epoch: int, batch: int | None, step: str) -> str:
    """The tag of one step: unique per (epoch, batch, step); batch None for once-per-epoch steps."""
    return f"train.e{epoch}.{step}" if batch is None else f"train.e{epoch}.b{batch}.{step}"


_SETUP = "train.setup"
_PUBLIC_KEY = "train.public_key"
_FINAL_SCORES = "train.scores"


@dataclass(frozen=True)
class GradientMask:
    """The integer mask a party adds to its encrypted gradient and later subtracts (module docstring)."""

    values: list[int]
    exponent: int
    bound: int

    @classmethod
    def draw(cls, gradient: EncryptedArray) -> GradientMask:
        """r_i uniform in [0, 2^(bits(B) + SIGMA)) from the OS's CSPRNG, B the gradient's mantissa bound."""
        if gradient.bound is None:
            raise ProtocolError("the encrypted residual arrived without a bound, so the gradient cannot be masked")
        bits = gradient.bound.bit_length() + SIGMA
        return cls([secrets.randbits(bits) for _ in range(len(gradient))], gradient.exponent, gradient.bound)

    def apply(self, gradient: EncryptedArray) -> EncryptedArray | PackedArray:
        """Enc(g + r), packed when that pays."""
        masked = gradient + FixedPoint.from_ints(self.values, self.exponent)
        if len(masked) < 2:
            return masked
        packing = Packing.for_array(masked)
        pays = packing.slots > 1 and 3 * packing.slot_bits < masked.public_key.key_bits
        return packing.pack(masked) if pays else masked

    def remove(self, masked: list[object]) -> np.ndarray:
        """g from the arbiter's mantissas of g + r; a reply of the wrong size or outside the bound is refused."""
        integers = [v for v in masked if isinstance(v, int) and not isinstance(v, bool)]
        if len(integers) != len(masked) or len(masked) != len(self.values):
            raise ProtocolError(f"the arbiter returned {len(masked)} values for a gradient of {len(self.values)}")
        mantissas = [v - r for v, r in zip(integers, self.values, strict=True)]
        if any(abs(m) > self.bound for m in mantissas):
            raise ProtocolError("the arbiter returned a gradient outside its bound: corrupted or wrong key")
        return FixedPoint.from_ints(mantissas, self.exponent).decode()


class Convergence:
    """FATE's early_stop rules (federatedml.optim.convergence), applied by the arbiter once per epoch.

    diff: |loss_t - loss_{t-1}| < tol (never in the first epoch); abs: loss <= tol;
    weight_diff: ||w_t - w_{t-1}|| < tol max(||w_t||, 1) over all parties' weights.
    """

    def __init__(self, early_stop: str, tol: float) -> None:
        self.early_stop = early_stop
        self.tol = tol
        self._previous_loss: float | None = None

    def converged(self, loss: float, step_norm: float, weight_norm: float) -> bool:
        if self.early_stop == "abs":
            return loss <= self.tol
        if self.early_stop == "weight_diff":
            return step_norm < self.tol * max(weight_norm, 1.0)
        previous, self._previous_loss = self._previous_loss, loss
        return previous is not None and abs(previous - loss) < self.tol


# ---------------------------------------------------------------------------------------------
# The parties (guest and hosts): what they share
# ---------------------------------------------------------------------------------------------


class _Party(ABC):
    """A data-holding role: its context, standardised aligned features, weights, optimizer and obfuscator pool."""

    features: np.ndarray
    weights: np.ndarray
    optimizer: Optimizer
    pool: ObfuscatorPool

    def __init__(
        self, ctx: FederationContext, params: HeteroLRParams, arbiter_id: str, on_epoch: EpochHook | None = None
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.arbiter_id = arbiter_id
        self._on_epoch = on_epoch

    def receive_public_key(self) -> PublicKey:
        """Step 1: the arbiter's key for the job; one shorter than the job asked for is refused."""
        key = self.ctx.get(_PUBLIC_KEY, self.arbiter_id, PublicKey)
        if key.key_bits != self.params.key_length and not self.ctx.allow_insecure_keys:
            raise ProtocolError(f"{self.arbiter_id} sent a {key.key_bits}-bit key; the job asks for "
                                f"{self.params.key_length} bits")
        self.ctx.public_key = key
        return key

    def start_pool(self, key: PublicKey, most_rows: int) -> ObfuscatorPool:
        """DJN obfuscators precomputed in the background, two batches' worth at most."""
        batch = most_rows if self.params.batch_size == -1 else min(self.params.batch_size, most_rows)
        self.pool = ObfuscatorPool(key.obfuscator, capacity=max(1, min(2 * batch + 8, _POOL_CAPACITY)))
        return self.pool

    def initialise(self, size: int, penalised: np.ndarray) -> None:
        """Initial weights by params.init_method (random ones seeded by the seed and this party's id)."""
        rng = np.random.default_rng([self.params.seed, zlib.crc32(self.ctx.party_id.encode())])
        method = self.params.init_method
        if method == "random_uniform":
            self.weights = rng.random(size)
        elif method == "random_normal":
            self.weights = rng.standard_normal(size)
        else:
            self.weights = np.ones(size) if method == "ones" else np.zeros(size)
        self.optimizer = make_optimizer(self.params, penalised)

    def train(self) -> tuple[int, bool]:
        """Epochs of mini-batches until the arbiter says stop or max_iter: (epochs run, converged)."""
        schedule = BatchSchedule(len(self.features), self.params.batch_size, self.params.seed)
        for epoch in range(self.params.max_iter):
            started, start = time.monotonic(), self.weights.copy()
            for batch, rows in enumerate(schedule.epoch()):
                self.train_batch(epoch, batch, rows)
            stop = self.conclude_epoch(epoch, start)
            if self._on_epoch is not None:
                self._on_epoch(EpochDone(epoch + 1, time.monotonic() - started))
            if stop:
                return epoch + 1, True
        return self.params.max_iter, False

    @abstractmethod
    def train_batch(self, epoch: int, batch: int, rows: np.ndarray) -> None:
        """This role's part of step 2 (and of the loss) for one mini-batch."""

    def masked_gradient(self, epoch: int, batch: int, features: np.ndarray, residual: EncryptedArray) -> GradientMask:
        """Step 2c: X^T [[d]] / n plus a fresh mask, packed, to the arbiter; keep the mask."""
        gradient = (features / len(features)).T @ residual
        mask = GradientMask.draw(gradient)
        self.ctx.put(_tag(epoch, batch, "gradient"), self.arbiter_id, mask.apply(gradient))
        return mask

    def unmask_and_update(self, epoch: int, batch: int, mask: GradientMask) -> None:
        """Step 2e: subtract the mask from the arbiter's reply and take one optimizer step."""
        masked = self.ctx.get(_tag(epoch, batch, "masked_gradient"), self.arbiter_id, list)
        self.weights = self.optimizer.update(self.weights, mask.remove(masked), epoch)

    def penalty(self) -> float:
        """This party's penalty term at its current weights."""
        return self.optimizer.penalty.value(self.weights)

    def conclude_epoch(self, epoch: int, start: np.ndarray) -> bool:
        """Step 3: send ||w_t - w_{t-1}||^2 and ||w_t||^2 if the rule needs them; the arbiter says stop or go."""
        if self.params.early_stop == "weight_diff":
            step = self.weights - start
            self.ctx.put(_tag(epoch, None, "weight_change"), self.arbiter_id,
                         {"step_square": float(step @ step), "norm_square": float(self.weights @ self.weights)})
        return self.ctx.get(_tag(epoch, None, "stop"), self.arbiter_id, bool)


def _standardised(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X - mean) / scale over these rows, with the mean and scale (fedcore.data's rules)."""
    sums, squares = feature_statistics(X)
    mean, scale = combine_statistics([len(X)], [sums], [squares])
    return standardize(X, mean, scale), mean, scale


def _checked_features(X: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(ids):
        raise ValueError(f"X must be a matrix with one row per id: shape {X.shape}, {len(ids)} ids")
    if not np.all(np.isfinite(X)):
        raise ValueError("X holds NaN or infinity")
    return X


# ---------------------------------------------------------------------------------------------
# Guest
# ---------------------------------------------------------------------------------------------


class HeteroLRGuest(_Party):
    """The label holder: forms the encrypted residual and the encrypted loss; holds the intercept."""

    labels: np.ndarray

    def __init__(
        self, ctx: FederationContext, params: HeteroLRParams, host_ids: Sequence[str], arbiter_id: str,
        on_epoch: EpochHook | None = None,
    ) -> None:
        super().__init__(ctx, params, arbiter_id, on_epoch)
        if not host_ids:
            raise ValueError("a vertical job needs at least one host")
        self.host_ids = list(host_ids)

    def fit(self, X: np.ndarray, y: np.ndarray, ids: Sequence[str]) -> tuple[GuestModel, TrainingReport]:
        X = _checked_features(X, ids)
        y = np.asarray(y)
        if y.shape != (len(ids),) or not np.isin(y, (0, 1)).all():
            raise ValueError("y must hold one label in {0, 1} per id")
        key = self.receive_public_key()
        with self.start_pool(key, len(ids)):
            alignment = align_guest(self.ctx, ids, self.host_ids)
            self.announce(alignment)
            features, mean, scale = _standardised(X[alignment.rows])
            if self.params.fit_intercept:
                features = np.hstack([features, np.ones((len(features), 1))])
            self.features, self.labels = features, y[alignment.rows].astype(np.float64)
            self.initialise(features.shape[1], np.arange(features.shape[1]) < X.shape[1])
            epochs, converged = self.train()
        metrics = self.evaluate_training()
        weights, intercept = self.weights[: X.shape[1]], float(self.weights[-1]) if self.params.fit_intercept else 0.0
        report = TrainingReport(epochs, converged, [], alignment.size, alignment.seconds, metrics)
        return GuestModel(weights, intercept, mean, scale), report

    def evaluate_training(self) -> dict[str, float]:
        """The final scoring pass (module docstring): every host's X_h w_h for the training rows, then
        the train metrics of the whole model on the guest's labels."""
        probability = _joint_probability(self.ctx, _FINAL_SCORES, self.host_ids, self.features @ self.weights)
        return evaluate_binary(self.labels, probability)

    def announce(self, alignment: Alignment) -> None:
        """Tell the arbiter the intersection size (it needs the batch sizes) and each host whether it
        computes a cross term (every host but the first)."""
        self.ctx.put(_SETUP, self.arbiter_id, {"rows": alignment.size})
        for position, host in enumerate(self.host_ids):
            self.ctx.put(_SETUP, host, {"cross_term": position > 0})
        if alignment.size == 0:
            raise ValueError("the intersection with the hosts is empty: nothing to train on")

    def train_batch(self, epoch: int, batch: int, rows: np.ndarray) -> None:
        features, labels = self.features[rows], self.labels[rows]
        own = features @ self.weights
        forwards = self.gather_forward(epoch, batch, len(rows))
        residual = self.encrypted_residual(own, labels, forwards)
        self.share_residual(epoch, batch, residual, forwards)
        mask = self.masked_gradient(epoch, batch, features, residual)
        self.encrypted_loss(epoch, batch, own, labels, forwards)
        self.unmask_and_update(epoch, batch, mask)

    def gather_forward(self, epoch: int, batch: int, size: int) -> list[EncryptedArray]:
        """Step 2a (receiving end): every host's [[u_h]] for this batch."""
        forwards = self.ctx.get_all(_tag(epoch, batch, "forward"), self.host_ids, EncryptedArray)
        for host, forward in zip(self.host_ids, forwards, strict=True):
            if len(forward) != size:
                raise ProtocolError(f"{host} sent {len(forward)} encrypted scores for a batch of {size}")
        return forwards

    def encrypted_residual(self, own: np.ndarray, labels: np.ndarray, forwards: list[EncryptedArray]) -> EncryptedArray:
        """Step 2b: [[d]] = 0.25 ([[sum_h u_h]] + z) + 0.5 - y."""
        return _sum(forwards) * 0.25 + (0.25 * own + 0.5 - labels)

    def share_residual(self, epoch: int, batch: int, residual: EncryptedArray, forwards: list[EncryptedArray]) -> None:
        """Step 2b (sending end): the rerandomised [[d]] to every host, and to host h > 1 the prefix
        [[u_1 + ... + u_{h-1}]] it needs for its cross term."""
        self.ctx.put_all(_tag(epoch, batch, "residual"), self.host_ids, residual.rerandomize(self.pool))
        for position, host in enumerate(self.host_ids[1:], start=1):
            self.ctx.put(_tag(epoch, batch, "prefix_forward"), host, _sum(forwards[:position]))

    def encrypted_loss(
        self, epoch: int, batch: int, own: np.ndarray, labels: np.ndarray, forwards: list[EncryptedArray]
    ) -> None:
        """Step 3: [[sum_i loss_i]] + n R(w_g) of this batch to the arbiter (module docstring).

        sum_i loss_i = n log 2 + sum_i (0.125 z_i^2 - 0.5 y'_i z_i) + sum_i (0.25 z_i - 0.5 y'_i) U_i
                       + 0.125 sum_h s_h + 0.25 sum_{j<h} <u_j, u_h>
        """
        signs = 2.0 * labels - 1.0
        squares = self.ctx.get_all(_tag(epoch, batch, "forward_square"), self.host_ids, EncryptedArray)
        crosses = self.ctx.get_all(_tag(epoch, batch, "cross"), self.host_ids[1:], EncryptedArray)
        if any(len(value) != 1 for value in [*squares, *crosses]):
            raise ProtocolError("a host sent a loss term that is not a single ciphertext")
        linear = (0.25 * own - 0.5 * signs)[None, :]
        constant = len(labels) * (math.log(2.0) + self.penalty()) + float(np.sum(0.125 * own**2 - 0.5 * signs * own))
        total = _sum(forwards).rmatmul(linear, precision=FLOAT_PRECISION) + _sum(squares) * 0.125 + constant
        if crosses:
            total = total + _sum(crosses) * 0.25
        self.ctx.put(_tag(epoch, batch, "loss"), self.arbiter_id, total)


def _sum(arrays: Sequence[EncryptedArray]) -> EncryptedArray:
    total = arrays[0]
    for array in arrays[1:]:
        total = total + array
    return total


# ---------------------------------------------------------------------------------------------
# Host
# ---------------------------------------------------------------------------------------------


class HeteroLRHost(_Party):
    """A feature holder: sends its encrypted scores, gets the encrypted residual, learns its own weights."""

    def __init__(
        self, ctx: FederationContext, params: HeteroLRParams, guest_id: str, arbiter_id: str,
        on_epoch: EpochHook | None = None,
    ) -> None:
        super().__init__(ctx, params, arbiter_id, on_epoch)
        self.guest_id = guest_id
        self.cross_term = False

    def fit(self, X: np.ndarray, ids: Sequence[str]) -> tuple[HostModel, TrainingReport]:
        X = _checked_features(X, ids)
        key = self.receive_public_key()
        with self.start_pool(key, len(ids)):
            alignment = align_host(self.ctx, ids, self.guest_id, self.params.psi_key_length)
            if alignment.size == 0:
                raise ValueError("the intersection with the guest is empty: nothing to train on")
            cross_term = self.ctx.get(_SETUP, self.guest_id, dict).get("cross_term")
            if not isinstance(cross_term, bool):
                raise ProtocolError(f"{self.guest_id} sent a setup without a cross_term flag")
            self.cross_term = cross_term
            self.features, mean, scale = _standardised(X[alignment.rows])
            self.initialise(X.shape[1], np.ones(X.shape[1], dtype=bool))
            epochs, converged = self.train()
        self.ctx.put(_FINAL_SCORES, self.guest_id, self.features @ self.weights)  # for the guest's evaluation
        report = TrainingReport(epochs, converged, [], alignment.size, alignment.seconds)
        return HostModel(self.weights, mean, scale), report

    def train_batch(self, epoch: int, batch: int, rows: np.ndarray) -> None:
        features = self.features[rows]
        forward = self.encrypted_forward(epoch, batch, features)
        residual = self.ctx.get(_tag(epoch, batch, "residual"), self.guest_id, EncryptedArray)
        if len(residual) != len(rows):
            raise ProtocolError(f"{self.guest_id} sent a residual of {len(residual)} for a batch of {len(rows)}")
        mask = self.masked_gradient(epoch, batch, features, residual)
        if self.cross_term:
            self.encrypted_cross_term(epoch, batch, forward)
        if self.params.penalty != "none":
            self.ctx.put(_tag(epoch, batch, "penalty"), self.arbiter_id, self.penalty())
        self.unmask_and_update(epoch, batch, mask)

    def encrypted_forward(self, epoch: int, batch: int, features: np.ndarray) -> np.ndarray:
        """Step 2a: [[u_h]] = Enc(X_h w_h) and [[sum_i u_h,i^2]] to the guest; keeps u_h in the clear."""
        key, forward = self.ctx.public_key, features @ self.weights
        assert key is not None
        self.ctx.put(_tag(epoch, batch, "forward"), self.guest_id, key.encrypt(forward, pool=self.pool))
        self.ctx.put(_tag(epoch, batch, "forward_square"), self.guest_id,
                     key.encrypt([float(forward @ forward)], pool=self.pool))
        return forward

    def encrypted_cross_term(self, epoch: int, batch: int, forward: np.ndarray) -> None:
        """For the loss with several hosts: [[<u_1 + ... + u_{h-1}, u_h>]], rerandomised, to the guest."""
        prefix = self.ctx.get(_tag(epoch, batch, "prefix_forward"), self.guest_id, EncryptedArray)
        if len(prefix) != len(forward):
            raise ProtocolError(f"{self.guest_id} sent a prefix of {len(prefix)} for a batch of {len(forward)}")
        cross = prefix.rmatmul(forward[None, :], precision=FLOAT_PRECISION).rerandomize(self.pool)
        self.ctx.put(_tag(epoch, batch, "cross"), self.guest_id, cross)


# ---------------------------------------------------------------------------------------------
# Arbiter
# ---------------------------------------------------------------------------------------------


class HeteroLRArbiter:
    """Owns the job's Paillier key; decrypts masked gradients and the loss; decides convergence."""

    def __init__(
        self,
        ctx: FederationContext,
        params: HeteroLRParams,
        guest_id: str,
        host_ids: Sequence[str],
        keypair: tuple[PublicKey, PrivateKey] | None = None,
        on_epoch: EpochHook | None = None,
        on_decrypt: Callable[[int], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.guest_id = guest_id
        self.host_ids = list(host_ids)
        self.public_key, self.private_key = keypair or generate_keypair(params.key_length)
        self._lengths: dict[str, int] = {}
        self._on_epoch = on_epoch
        self._on_decrypt = on_decrypt

    def _decrypted(self, ciphertexts: int) -> None:
        if self._on_decrypt is not None:
            self._on_decrypt(ciphertexts)

    @property
    def parties(self) -> list[str]:
        """Hosts first: their gradients come last, and a silent host is then the one named."""
        return [*self.host_ids, self.guest_id]

    def fit(self) -> TrainingReport:
        self.ctx.public_key = self.public_key
        self.ctx.put_all(_PUBLIC_KEY, self.parties, self.public_key)
        rows = self.ctx.get(_SETUP, self.guest_id, dict).get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ProtocolError(f"{self.guest_id} announced an invalid intersection size {rows!r}")
        if rows == 0:
            raise ValueError("the guest found no rows shared with the hosts: nothing to train on")
        sizes = BatchSchedule(rows, self.params.batch_size, self.params.seed).sizes
        convergence = Convergence(self.params.early_stop, self.params.tol)
        losses: list[float] = []
        for epoch in range(self.params.max_iter):
            started, total = time.monotonic(), 0.0
            for batch, size in enumerate(sizes):
                self.decrypt_gradients(epoch, batch)
                total += self.batch_loss(epoch, batch, size)
            losses.append(total / rows)
            if self._on_epoch is not None:
                self._on_epoch(EpochDone(epoch + 1, time.monotonic() - started, losses[-1]))
            stop = convergence.converged(losses[-1], *self.weight_change(epoch))
            self.ctx.put_all(_tag(epoch, None, "stop"), self.parties, stop)
            if stop:
                return TrainingReport(epoch + 1, True, losses, rows)
        return TrainingReport(self.params.max_iter, False, losses, rows)

    def decrypt_gradients(self, epoch: int, batch: int) -> None:
        """Step 2d: decrypt each party's masked gradient and return its integer mantissas.

        Each party's gradient must keep the length it had in the first batch, so the arbiter
        decrypts nothing but one gradient-sized array per party per batch.
        """
        for party in self.parties:
            masked = self.ctx.get(_tag(epoch, batch, "gradient"), party)
            if isinstance(masked, PackedArray):
                length, values = masked.count, self.private_key.decrypt_packed_mantissas(masked)
                self._decrypted(len(masked.ciphertexts))
            elif isinstance(masked, EncryptedArray):
                length, values = len(masked), self.private_key.decrypt_mantissas(masked)
                self._decrypted(len(masked))
            else:
                raise ProtocolError(f"{party} sent a {type(masked).__name__} as its masked gradient")
            if self._lengths.setdefault(party, length) != length:
                raise ProtocolError(f"{party} sent a gradient of {length} values, {self._lengths[party]} before")
            self.ctx.put(_tag(epoch, batch, "masked_gradient"), party, values)

    def batch_loss(self, epoch: int, batch: int, size: int) -> float:
        """Step 3: the batch's loss sum, plus every host's penalty weighted by the batch size."""
        encrypted = self.ctx.get(_tag(epoch, batch, "loss"), self.guest_id, EncryptedArray)
        if len(encrypted) != 1:
            raise ProtocolError(f"{self.guest_id} sent a loss of {len(encrypted)} values")
        total = float(self.private_key.decrypt(encrypted)[0])
        self._decrypted(1)
        if self.params.penalty != "none":
            total += size * sum(self.ctx.get_all(_tag(epoch, batch, "penalty"), self.host_ids, float))
        return total

    def weight_change(self, epoch: int) -> tuple[float, float]:
        """(||w_t - w_{t-1}||, ||w_t||) over all parties' weights, for early_stop weight_diff (else zeros)."""
        if self.params.early_stop != "weight_diff":
            return 0.0, 0.0
        changes = self.ctx.get_all(_tag(epoch, None, "weight_change"), self.parties, dict)
        try:
            step = sum(float(change["step_square"]) for change in changes)
            norm = sum(float(change["norm_square"]) for change in changes)
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("a party sent a malformed weight change") from None
        return math.sqrt(step), math.sqrt(norm)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def fit_guest(
    ctx: FederationContext,
    params: HeteroLRParams,
    X: np.ndarray,
    y: np.ndarray,
    ids: Sequence[str],
    host_ids: Sequence[str],
    arbiter_id: str,
    *,
    on_epoch: EpochHook | None = None,
) -> tuple[GuestModel, TrainingReport]:
    """Train as the guest (labels y in {0, 1}, features X, one row per id); ``on_epoch`` after each epoch."""
    return HeteroLRGuest(ctx, params, host_ids, arbiter_id, on_epoch).fit(X, y, ids)


def fit_host(
    ctx: FederationContext, params: HeteroLRParams, X: np.ndarray, ids: Sequence[str], guest_id: str, arbiter_id: str,
    *, on_epoch: EpochHook | None = None,
) -> tuple[HostModel, TrainingReport]:
    """Train as a host (features X, one row per id); ``on_epoch`` after each epoch."""
    return HeteroLRHost(ctx, params, guest_id, arbiter_id, on_epoch).fit(X, ids)


def fit_arbiter(
    ctx: FederationContext,
    params: HeteroLRParams,
    guest_id: str,
    host_ids: Sequence[str],
    *,
    keypair: tuple[PublicKey, PrivateKey] | None = None,
    on_epoch: EpochHook | None = None,
    on_decrypt: Callable[[int], None] | None = None,
) -> TrainingReport:
    """Serve as the arbiter, with a fresh key of params.key_length bits unless ``keypair`` is given.

    ``on_epoch`` is called after each epoch's loss is decrypted (progress reports), ``on_decrypt``
    with the number of ciphertexts of each decryption (metrics).
    """
    return HeteroLRArbiter(ctx, params, guest_id, host_ids, keypair, on_epoch, on_decrypt).fit()


_PREDICT = "predict"


def predict_guest(
    ctx: FederationContext, model: GuestModel, X: np.ndarray, ids: Sequence[str], host_ids: Sequence[str],
    *, on_aligned: Callable[[Alignment], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score the guest's rows shared with every host: (their row indices, P(y = 1)).

    Rows are aligned by PSI (``on_aligned`` is told when that is done); each host sends its
    plaintext X_h w_h for them (DESIGN.md).
    """
    X = _checked_features(X, ids)
    alignment = align_guest(ctx, ids, host_ids, tag=f"{_PREDICT}.psi")
    if on_aligned is not None:
        on_aligned(alignment)
    rows = np.asarray(alignment.rows, dtype=np.int64)
    return rows, _joint_probability(ctx, f"{_PREDICT}.forward", host_ids, model.decision(X[rows]))


def _joint_probability(ctx: FederationContext, tag: str, host_ids: Sequence[str], score: np.ndarray) -> np.ndarray:
    """P(y = 1) from the guest's part of the linear score and each host's plaintext part, sent under ``tag``."""
    for host in host_ids:
        part = ctx.get(tag, host, np.ndarray)
        if part.shape != score.shape or part.dtype != np.float64:
            raise ProtocolError(f"{host} sent scores of shape {part.shape} and dtype {part.dtype} for {len(score)} rows")
        score = score + part
    return 0.5 * (1.0 + np.tanh(0.5 * score))  # the logistic sigmoid, without overflow


def predict_host(
    ctx: FederationContext, model: HostModel, X: np.ndarray, ids: Sequence[str], guest_id: str,
    *, psi_key_bits: int = PSI_DEFAULT_KEY_BITS,
) -> int:
    """Send the guest X_h w_h for the rows it shares with the guest; returns how many."""
    X = _checked_features(X, ids)
    alignment = align_host(ctx, ids, guest_id, psi_key_bits, tag=f"{_PREDICT}.psi")
    ctx.put(f"{_PREDICT}.forward", guest_id, model.decision(X[alignment.rows]))
    return alignment.size


def evaluate_binary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS (max of TPR - FPR over thresholds), and accuracy, precision, recall predicting 1 when p > 0.5.

    AUC and KS are nan when y holds one class only; precision is 0 when nothing is predicted 1.
    """
    y, p = np.asarray(y).astype(np.int64), np.asarray(p, dtype=np.float64)
    predicted = (p > 0.5).astype(np.int64)
    metrics = {
        "auc": math.nan,
        "ks": math.nan,
        "accuracy": float(np.mean(predicted == y)) if len(y) else math.nan,
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
    }
    if len(np.unique(y)) == 2:
        false_positive_rate, true_positive_rate, _ = roc_curve(y, p)
        metrics["auc"] = float(roc_auc_score(y, p))
        metrics["ks"] = float(np.max(true_positive_rate - false_positive_rate))
    return metrics

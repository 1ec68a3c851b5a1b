"""The baseline of ``bench/vertical.py``: fedsuite's hetero-LR protocol written the straightforward way with phe.

python-paillier (``phe``) element by element: a 1024-bit ``generate_paillier_keypair``,
``public_key.encrypt`` per float, ``EncryptedNumber`` arithmetic per element,
``private_key.decrypt`` per element, and each gradient element masked by adding a plain
random float. The protocol is fedcore.vertical.hetero_lr's, step for step, with one
guest, one host and the arbiter:

    host     [[u_h]] = Enc(X_h w_h) per row, [[s_h]] = Enc(u_h . u_h)
    guest    [[d_i]] = 0.25 [[u_h,i]] + (0.25 z_i + 0.5 - y_i), then rerandomised (obfuscate)
    each     [[g_j]] = sum_i [[d_i]] x_ij / n, plus a float mask r_j
    arbiter  decrypts every g_j + r_j
    each     g_j = (g_j + r_j) - r_j; w <- optimizer(w, g)
    guest    [[sum loss]] = sum_i (0.25 z_i - 0.5 y'_i) [[u_h,i]] + 0.125 [[s_h]] + plaintext part
    arbiter  decrypts the loss, adds the host's penalty

Same Taylor residual, same Taylor loss, same standardisation, same optimizer and penalty
(fedcore.vertical.optimizers with the same HeteroLRParams), same BatchSchedule (seeded
permutation per epoch). What differs from the service besides the crypto: the three roles
are plain functions called one after another in ONE process -- no serialisation, no
network, no TLS, no PSI (rows are joined by id in memory) -- which favours phe; and
they never run in parallel (the service's three processes can use both cores). The rows
are in file order, the service's in PSI's canonical order, so the mini-batches hold
other rows (same sizes, same seed).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from phe import paillier
from sklearn.metrics import roc_auc_score

from fedcore.data import combine_statistics, feature_statistics, standardize
from fedcore.vertical.hetero_lr import BatchSchedule
from fedcore.vertical.optimizers import Optimizer, make_optimizer
from fedcore.vertical.params import HeteroLRParams

#: Gradient masks are uniform floats in [0, MASK_RANGE): wide against gradients of order 1,
#: and g = (g + r) - r still keeps about 36 of float64's 53 bits.
MASK_RANGE = float(2**16)


@dataclass
class PheRun:
    """What the baseline measured."""

    epochs: int
    batches_per_epoch: int
    epoch_seconds: list[float] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)
    role_seconds: dict[str, float] = field(default_factory=lambda: {"host": 0.0, "guest": 0.0, "arbiter": 0.0})
    losses: list[float] = field(default_factory=list)
    auc: float | None = None
    keygen_seconds: float = 0.0
    partial: bool = False
    cpu_seconds: float = 0.0  # process CPU time of the batches run (single-threaded: about their wall time)


def _standardised(X: np.ndarray) -> np.ndarray:
    sums, squares = feature_statistics(X)
    mean, scale = combine_statistics([len(X)], [sums], [squares])
    return standardize(X, mean, scale)


def _initial(size: int, params: HeteroLRParams, penalised: np.ndarray) -> tuple[np.ndarray, Optimizer]:
    if params.init_method != "zeros":
        raise ValueError("the phe baseline starts from zeros only")
    return np.zeros(size), make_optimizer(params, penalised)


class _Clock:
    """Adds the seconds of each role's steps into a PheRun."""

    def __init__(self, run: PheRun) -> None:
        self.run = run

    def __call__(self, role: str, started: float) -> None:
        self.run.role_seconds[role] += time.perf_counter() - started


def train_phe(
    X_guest: np.ndarray,
    y: np.ndarray,
    X_host: np.ndarray,
    params: HeteroLRParams,
    *,
    max_batches: int | None = None,
    encrypted: bool = True,
) -> PheRun:
    """Train for params.max_iter epochs (no early stop), or only the first ``max_batches`` batches of epoch 1.

    Rows of X_guest, y and X_host are the same people in the same order. ``encrypted=False``
    runs the very same steps on plain floats (encrypt, rerandomise and decrypt become the
    identity): the reference the phe run must reproduce, and an AUC where phe runs partially.
    """
    started = time.perf_counter()
    if encrypted:
        public_key, private_key = paillier.generate_paillier_keypair(n_length=params.key_length)
        encrypt, decrypt = public_key.encrypt, private_key.decrypt
    else:
        encrypt = decrypt = _identity
    keygen_seconds = time.perf_counter() - started
    guest = _standardised(np.asarray(X_guest, dtype=np.float64))
    if params.fit_intercept:
        guest = np.hstack([guest, np.ones((len(guest), 1))])
    host = _standardised(np.asarray(X_host, dtype=np.float64))
    labels = np.asarray(y, dtype=np.float64)
    w_guest, opt_guest = _initial(guest.shape[1], params, np.arange(guest.shape[1]) < X_guest.shape[1])
    w_host, opt_host = _initial(host.shape[1], params, np.ones(host.shape[1], dtype=bool))
    schedule = BatchSchedule(len(labels), params.batch_size, params.seed)
    run = PheRun(params.max_iter if max_batches is None else 1, len(schedule.sizes), keygen_seconds=keygen_seconds)
    clock = _Clock(run)
    masks = random.SystemRandom()
    cpu_started = time.process_time()

    for epoch in range(run.epochs):
        epoch_started = time.perf_counter()
        loss_total = 0.0
        for batch, rows in enumerate(schedule.epoch()):
            if max_batches is not None and batch >= max_batches:
                run.partial = True
                break
            batch_started = time.perf_counter()
            xg, xh, yb = guest[rows], host[rows], labels[rows]
            n = len(rows)

            t = time.perf_counter()  # host: encrypted forward
            u_host = xh @ w_host
            enc_u = [encrypt(float(v)) for v in u_host]
            enc_s = encrypt(float(u_host @ u_host))
            clock("host", t)

            t = time.perf_counter()  # guest: residual, rerandomised for the host; its own gradient
            z = xg @ w_guest
            plain = 0.25 * z + 0.5 - yb
            residual = [c * 0.25 + float(p) for c, p in zip(enc_u, plain)]
            if encrypted:
                for c in residual:
                    c.obfuscate()
            g_mask, g_masked = _masked_gradient(residual, xg / n, masks)
            clock("guest", t)

            t = time.perf_counter()  # host: its gradient from the residual
            h_mask, h_masked = _masked_gradient(residual, xh / n, masks)
            host_penalty = opt_host.penalty.value(w_host)
            clock("host", t)

            t = time.perf_counter()  # guest: encrypted Taylor loss of the batch
            signs = 2.0 * yb - 1.0
            linear = 0.25 * z - 0.5 * signs
            constant = n * (math.log(2.0) + opt_guest.penalty.value(w_guest))
            constant += float(np.sum(0.125 * z**2 - 0.5 * signs * z))
            enc_loss = enc_s * 0.125 + constant
            for c, coefficient in zip(enc_u, linear):
                enc_loss = enc_loss + c * float(coefficient)
            clock("guest", t)

            t = time.perf_counter()  # arbiter: decrypt masked gradients and the loss
            g_plain = [decrypt(c) for c in g_masked]
            h_plain = [decrypt(c) for c in h_masked]
            loss_total += decrypt(enc_loss) + n * host_penalty
            clock("arbiter", t)

            t = time.perf_counter()  # each party: unmask, step
            w_guest = opt_guest.update(w_guest, np.subtract(g_plain, g_mask), epoch)
            clock("guest", t)
            t = time.perf_counter()
            w_host = opt_host.update(w_host, np.subtract(h_plain, h_mask), epoch)
            clock("host", t)
            run.batch_seconds.append(time.perf_counter() - batch_started)
        if run.partial:
            break
        run.losses.append(loss_total / len(labels))
        run.epoch_seconds.append(time.perf_counter() - epoch_started)

    run.cpu_seconds = time.process_time() - cpu_started
    if not run.partial:
        run.auc = float(roc_auc_score(labels, guest @ w_guest + host @ w_host))
    return run


def _identity(value: float) -> float:
    return value


def _masked_gradient(
    residual: Sequence[paillier.EncryptedNumber | float], features: np.ndarray, masks: random.Random
) -> tuple[list[float], list[paillier.EncryptedNumber | float]]:
    """[[g_j]] = sum_i [[d_i]] x_ij (features already divided by n), plus a float mask r_j: (r, [[g + r]])."""
    mask, masked = [], []
    for column in features.T:
        total = residual[0] * float(column[0])
        for c, x in zip(residual[1:], column[1:]):
            total = total + c * float(x)
        r = masks.uniform(0.0, MASK_RANGE)
        mask.append(r)
        masked.append(total + r)
    return mask, masked

"""fedcore.vertical: PSI alignment, hetero LR against sklearn and a plaintext replay, privacy of what each
node receives, parameters, optimizers, timeouts and prediction. Every role runs in its own thread over
MemoryFederation; Paillier keys are 512 bits and PSI keys 1024 bits."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from fedcore.crypto.paillier import EncryptedArray, PackedArray, PrivateKey, PublicKey, generate_keypair
from fedcore.federation import FederationContext, MemoryFederation, PeerTimeout, ProtocolError, decode
from fedcore.vertical import (
    EpochDone,
    GuestModel,
    HeteroLRParams,
    HostModel,
    align_guest,
    align_host,
    evaluate_binary,
    fit_arbiter,
    fit_guest,
    fit_host,
    predict_guest,
    predict_host,
)
from fedcore.vertical.hetero_lr import GradientMask
from fedcore.vertical.optimizers import make_optimizer

Keys = tuple[PublicKey, PrivateKey]
GUEST, ARBITER = "guest", "arbiter"
GUEST_FEATURES = 10
BASE = {"key_length": 1024, "psi_key_length": 1024, "alpha": 0.01, "tol": 0.0}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return generate_keypair(512, allow_insecure=True)


# -- data: breast cancer split by columns, each side with its own row order and its own extra ids ----


@dataclass(frozen=True)
class Side:
    X: np.ndarray
    ids: list[str]


@dataclass(frozen=True)
class Split:
    guest: Side
    y: np.ndarray
    hosts: dict[str, Side]
    shared: set[str]

    def joined(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The shared rows as one table (sorted by id): features [guest | host 1 | ...], labels, blocks."""
        order = sorted(self.shared)
        blocks = [self.guest.X[_rows_of(self.guest.ids, order)]]
        blocks += [side.X[_rows_of(side.ids, order)] for side in self.hosts.values()]
        return np.hstack(blocks), self.y[_rows_of(self.guest.ids, order)], blocks


def _rows_of(ids: list[str], wanted: list[str]) -> np.ndarray:
    position = {identifier: row for row, identifier in enumerate(ids)}
    return np.array([position[identifier] for identifier in wanted])


def breast_split(n_hosts: int = 1, unshared: float = 0.05, seed: int = 0) -> Split:
    """Guest: label + first 10 features; hosts share the other 20. Each side drops a different ~5% of the
    people (so has ids the others lack) and shuffles its rows its own way."""
    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    ids = np.array([f"customer-{i:04d}" for i in range(len(data.target))])
    host_columns = np.array_split(np.arange(GUEST_FEATURES, data.data.shape[1]), n_hosts)
    sides = []
    for columns in [np.arange(GUEST_FEATURES), *host_columns]:
        kept = rng.permutation(np.flatnonzero(rng.random(len(ids)) >= unshared))
        sides.append((data.data[kept][:, columns], list(ids[kept]), data.target[kept]))
    shared = set.intersection(*(set(side[1]) for side in sides))
    guest = Side(sides[0][0], sides[0][1])
    hosts = {f"host-{k}": Side(X, side_ids) for k, (X, side_ids, _) in enumerate(sides[1:], start=1)}
    return Split(guest, sides[0][2], hosts, shared)


# -- running the roles -----------------------------------------------------------------------------


def run_roles(roles: dict[str, Callable[[], Any]], limit_s: float = 120.0) -> dict[str, Any]:
    """Run each role in its own thread; return results, or the exception a role raised."""
    with ThreadPoolExecutor(len(roles)) as pool:
        futures = {name: pool.submit(role) for name, role in roles.items()}
        return {name: future.exception(limit_s) or future.result() for name, future in futures.items()}


def train(
    split: Split, params: HeteroLRParams, keys: Keys, *, contexts: Callable[[str], FederationContext] | None = None,
    hooks: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """fit_arbiter, fit_guest and fit_host for every host, concurrently (``hooks``: a role's on_epoch/on_decrypt
    keyword arguments); raises the first failure."""
    hosts = list(split.hosts)
    hooks = hooks or {}
    if contexts is None:
        federation = MemoryFederation([GUEST, ARBITER, *hosts], allow_insecure_keys=True)
        contexts = lambda party: federation.context("train", party)  # noqa: E731
    roles: dict[str, Callable[[], Any]] = {
        ARBITER: lambda: fit_arbiter(contexts(ARBITER), params, GUEST, hosts, keypair=keys, **hooks.get(ARBITER, {})),
        GUEST: lambda: fit_guest(contexts(GUEST), params, split.guest.X, split.y, split.guest.ids, hosts, ARBITER,
                                 **hooks.get(GUEST, {})),
    }
    for host, side in split.hosts.items():
        roles[host] = partial(fit_host, contexts(host), params, side.X, side.ids, GUEST, ARBITER, **hooks.get(host, {}))
    results = run_roles(roles)
    for result in results.values():
        if isinstance(result, BaseException):
            raise result
    return results


def decision(split: Split, results: dict[str, Any], ids: list[str]) -> np.ndarray:
    """The trained split model's linear score on ``ids``, computed here from every side's model."""
    score = results[GUEST][0].decision(split.guest.X[_rows_of(split.guest.ids, ids)])
    for host, side in split.hosts.items():
        score = score + results[host][0].decision(side.X[_rows_of(side.ids, ids)])
    return score


def sklearn_auc(X: np.ndarray, y: np.ndarray, alpha: float) -> float:
    """Our objective is mean log-loss + (alpha / 2) ||w||^2; sklearn's is C sum log-loss + ||w||^2 / 2,
    the same minimiser when C = 1 / (alpha n)."""
    Xs = StandardScaler().fit_transform(X)
    model = LogisticRegression(C=1.0 / (alpha * len(X)), max_iter=10_000).fit(Xs, y)
    return float(roc_auc_score(y, model.decision_function(Xs)))


# -- (a) alignment and accuracy ----------------------------------------------------------------------


@pytest.mark.parametrize("n_hosts", [1, 2])
def test_psi_finds_exactly_the_shared_ids_in_one_order_on_every_side(n_hosts: int) -> None:
    split = breast_split(n_hosts, seed=n_hosts)
    hosts = list(split.hosts)
    federation = MemoryFederation([GUEST, *hosts])
    roles: dict[str, Callable[[], Any]] = {
        GUEST: lambda: align_guest(federation.context("psi", GUEST), split.guest.ids, hosts)}
    for host, side in split.hosts.items():
        roles[host] = partial(align_host, federation.context("psi", host), side.ids, GUEST, 1024)
    alignments = run_roles(roles)
    guest_order = [split.guest.ids[row] for row in alignments[GUEST].rows]
    assert set(guest_order) == split.shared and len(guest_order) == len(split.shared) > 0
    for host, side in split.hosts.items():
        assert [side.ids[row] for row in alignments[host].rows] == guest_order
    assert guest_order != sorted(guest_order) and alignments[GUEST].size == len(split.shared)
    assert 0.0 < alignments[GUEST].seconds < 60.0


def test_breast_train_auc_is_within_0005_of_sklearn(keys: Keys) -> None:
    split = breast_split(1)
    params = HeteroLRParams.from_dict({**BASE, "optimizer": "adam", "max_iter": 30, "batch_size": 240})
    results = train(split, params, keys)
    X, y, _ = split.joined()
    auc = roc_auc_score(y, decision(split, results, sorted(split.shared)))
    assert abs(auc - sklearn_auc(X, y, params.alpha)) <= 0.005
    guest_report, arbiter_report = results[GUEST][1], results[ARBITER]
    assert guest_report.intersection == arbiter_report.intersection == len(split.shared)
    assert len(arbiter_report.losses) == arbiter_report.epochs == 30 and guest_report.losses == []


def test_one_guest_and_two_hosts_converge(keys: Keys) -> None:
    split = breast_split(2, seed=3)
    params = HeteroLRParams.from_dict({**BASE, "optimizer": "nesterov_momentum_sgd", "max_iter": 60,
                                       "tol": 1e-4, "early_stop": "diff"})
    results = train(split, params, keys)
    report = results[ARBITER]
    assert report.converged and report.epochs < 60
    assert all(results[party][1].epochs == report.epochs and results[party][1].converged for party in split.hosts)
    assert report.losses[-1] < report.losses[0]
    X, y, _ = split.joined()
    assert abs(roc_auc_score(y, decision(split, results, sorted(split.shared))) - sklearn_auc(X, y, 0.01)) <= 0.01


# -- the protocol computes exactly the plaintext algorithm (incl. cross terms of the loss) --------------


def plaintext_replay(params: HeteroLRParams, blocks: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Centralised Taylor-form LR, full batch: final weights [block 1 | ... | intercept] and the losses."""
    features = np.hstack([(block - block.mean(0)) / block.std(0) for block in blocks])
    A = np.hstack([features, np.ones((len(y), 1))])
    w = np.ones(A.shape[1]) if params.init_method == "ones" else np.zeros(A.shape[1])
    optimizer = make_optimizer(params, np.arange(A.shape[1]) < features.shape[1])
    losses = []
    for epoch in range(params.max_iter):
        u = A @ w
        losses.append(float(np.mean(np.log(2) - 0.5 * (2 * y - 1) * u + 0.125 * u**2)) + optimizer.penalty.value(w))
        w = optimizer.update(w, A.T @ (0.25 * u + 0.5 - y) / len(y), epoch)
    return w, losses


@pytest.mark.parametrize(("optimizer", "init_method", "penalty"), [
    ("sgd", "zeros", "L2"),
    ("rmsprop", "ones", "L2"),
    ("adam", "zeros", "L1"),
    ("adagrad", "ones", "none"),
    ("nesterov_momentum_sgd", "ones", "L2"),
])
def test_training_equals_the_plaintext_algorithm(keys: Keys, optimizer: str, init_method: str, penalty: str) -> None:
    split = breast_split(2, unshared=0.0)
    params = HeteroLRParams.from_dict({**BASE, "optimizer": optimizer, "init_method": init_method, "penalty": penalty,
                                       "alpha": 0.05, "learning_rate": 0.05, "max_iter": 4})
    results = train(split, params, keys)
    _, y, blocks = split.joined()
    expected_weights, expected_losses = plaintext_replay(params, blocks, y)
    guest: GuestModel = results[GUEST][0]
    weights = np.concatenate([guest.weights, *(results[host][0].weights for host in split.hosts), [guest.intercept]])
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[ARBITER].losses, expected_losses, rtol=1e-6, atol=1e-6)


# -- (c) privacy: what each node actually received ------------------------------------------------


class RecordingTransport:
    """Forwards every message and keeps a copy: (src, dst, tag, payload)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.messages: list[tuple[str, str, str, bytes]] = []

    def send(self, job_id: str, tag: str, src: str, dst: str, payload: bytes) -> None:
        self.messages.append((src, dst, tag, payload))
        self.inner.send(job_id, tag, src, dst, payload)

    def received(self, dst: str, public: PublicKey) -> list[tuple[str, str, object]]:
        return [(src, tag, decode(payload, public, allow_insecure_keys=True))
                for src, to, tag, payload in self.messages if to == dst]


def test_each_node_receives_only_what_the_protocol_allows(keys: Keys) -> None:
    public, _ = keys
    split = breast_split(2, unshared=0.0)
    hosts = list(split.hosts)
    federation = MemoryFederation([GUEST, ARBITER, *hosts], allow_insecure_keys=True)
    recorder = RecordingTransport(federation.transport)
    params = HeteroLRParams.from_dict({**BASE, "max_iter": 2})
    n = len(split.shared)
    train(split, params, keys, contexts=lambda party: FederationContext(
        "train", party, recorder, federation.mailbox(party), 30.0, allow_insecure_keys=True))

    # The arbiter: masked gradients, the loss ciphertext and scalars; never an array, a table or ids.
    to_arbiter = recorder.received(ARBITER, public)
    for _, tag, value in to_arbiter:
        if tag.endswith(".gradient"):  # packed: 3 x 129-bit slots fit a 512-bit key, and that pays
            assert isinstance(value, PackedArray) and len(value.ciphertexts) < value.count
        elif tag.endswith(".loss"):
            assert isinstance(value, EncryptedArray) and len(value) == 1
        elif tag == "train.setup":
            assert value == {"rows": n}
        else:
            assert tag.endswith(".penalty") and isinstance(value, float), tag
    # What it decrypts is the true first gradient plus a mask that hides it (zero weights: d = 0.5 - y).
    _, y, blocks = split.joined()
    standardised = [(block - block.mean(0)) / block.std(0) for block in blocks]
    true_gradients = {GUEST: np.hstack([standardised[0], np.ones((n, 1))]).T @ (0.5 - y) / n}
    true_gradients |= {host: block.T @ (0.5 - y) / n for host, block in zip(hosts, standardised[1:], strict=True)}
    sent = {(src, tag): value for src, tag, value in to_arbiter}
    for party, gradient in true_gradients.items():
        exponent = sent[(party, "train.e0.b0.gradient")].exponent  # type: ignore[attr-defined]
        decrypted = next(decode(payload, public) for src, dst, tag, payload in recorder.messages
                         if (src, dst, tag) == (ARBITER, party, "train.e0.b0.masked_gradient"))
        assert isinstance(decrypted, list) and len(decrypted) == len(gradient)
        true_mantissas = np.rint(np.ldexp(gradient, -exponent)).astype(object)
        hiding = [abs(int(v) - int(m)).bit_length() for v, m in zip(decrypted, true_mantissas, strict=True)]
        assert min(hiding) > max(abs(int(m)) for m in true_mantissas).bit_length() + 10
        assert not np.allclose(np.ldexp(np.array(decrypted, dtype=float), exponent), gradient, atol=1.0)

    # The residual reaches the hosts rerandomised: the same plaintexts, other ciphertexts than the guest
    # computes from the hosts' own [[u_h]] (zero weights: d = 0.25 sum_h [[u_h]] + 0.5 - y, 0.5 - y exact).
    _, private = keys
    to_guest = {(src, tag): value for src, tag, value in recorder.received(GUEST, public)}
    forwards = [to_guest[(host, "train.e0.b0.forward")] for host in hosts]
    residual = next(value for src, tag, value in recorder.received(hosts[0], public) if tag == "train.e0.b0.residual")
    assert isinstance(residual, EncryptedArray)
    as_computed = (forwards[0] + forwards[1]) * 0.25 + private.decrypt(residual)  # type: ignore[operator]
    assert private.decrypt(as_computed).tolist() == private.decrypt(residual).tolist()
    assert not set(as_computed.ciphertexts) & set(residual.ciphertexts)

    # A host: ciphertexts, its own masked gradient, control values; no plaintext row-length array.
    for host in hosts:
        for src, tag, value in recorder.received(host, public):
            assert not isinstance(value, np.ndarray), tag
            if isinstance(value, bytes):
                assert tag.startswith("psi.") and src == GUEST
            elif isinstance(value, list):
                assert src == ARBITER and len(value) == split.hosts[host].X.shape[1] != n, tag
            elif tag.endswith((".residual", ".prefix_forward")):
                assert isinstance(value, EncryptedArray) and len(value) == n
            else:
                assert isinstance(value, bool | dict | PublicKey), tag

    # The guest: nothing but ciphertexts from hosts during training; after the last epoch's stop, each host's
    # X_h w_h for the training rows (the final scoring pass, what a predict job on those rows would send).
    for src, tag, value in recorder.received(GUEST, public):
        if src in hosts and tag == "train.scores":
            assert isinstance(value, np.ndarray) and value.shape == (n,)
        elif src in hosts and tag.startswith("train."):
            assert isinstance(value, EncryptedArray), tag
        else:
            assert not isinstance(value, np.ndarray), tag
    order = [(src, dst, tag) for src, dst, tag, _ in recorder.messages]
    for host in hosts:
        assert order.index((host, GUEST, "train.scores")) > order.index((ARBITER, host, "train.e1.stop"))


def test_a_tampered_reply_from_the_arbiter_is_refused(keys: Keys) -> None:
    public, _ = keys
    gradient = np.ones((2, 3)) @ public.encrypt([0.5, -0.25, 1.0])
    mask = GradientMask.draw(gradient)
    with pytest.raises(ProtocolError, match="returned 1 values"):
        mask.remove([1])
    with pytest.raises(ProtocolError, match="outside its bound"):
        mask.remove([r + gradient.bound * 2 for r in mask.values])  # type: ignore[operator]
    assert mask.remove([r + 3 for r in mask.values]).tolist() == [3 * 2.0**mask.exponent] * 2


# -- (d) parameters, initialisation, early stopping, penalties ---------------------------------------


def test_from_dict_accepts_fate_names_and_keeps_defaults() -> None:
    params = HeteroLRParams.from_dict({"penalty": "L1", "alpha": 2, "max_iter": 5})
    assert (params.penalty, params.alpha, params.max_iter, params.optimizer) == ("L1", 2.0, 5, "rmsprop")
    assert isinstance(params.alpha, float) and HeteroLRParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize(("values", "message"), [
    ({"optimizer": "foo"}, "optimizer: must be one of sgd, adam, rmsprop, adagrad, nesterov_momentum_sgd (got 'foo')"),
    ({"penalty": "l2"}, "penalty: must be one of L1, L2, none"),
    ({"early_stop": "loss"}, "early_stop: must be one of"),
    ({"init_method": "const"}, "init_method: must be one of"),
    ({"alpha": -1.0}, "alpha: must be >= 0"),
    ({"alpha": float("nan")}, "alpha: must be a finite number"),
    ({"learning_rate": 0}, "learning_rate: must be > 0"),
    ({"decay": "fast"}, "decay: must be a finite number"),
    ({"decay_sqrt": 1}, "decay_sqrt: must be true or false"),
    ({"max_iter": 0}, "max_iter: must be >= 1"),
    ({"max_iter": 2.5}, "max_iter: must be an integer"),
    ({"batch_size": 5}, "batch_size: must be -1"),
    ({"batch_size": -2}, "batch_size: must be >= -1"),
    ({"tol": -1e-4}, "tol: must be >= 0"),
    ({"key_length": 512}, "key_length: must be one of 1024, 2048, 3072"),
    ({"psi_key_length": 4096}, "psi_key_length: must be one of"),
    ({"seed": -1}, "seed: must be >= 0"),
    ({"fit_intercept": "yes"}, "fit_intercept: must be true or false"),
    ({"learning_rte": 0.1, "zeta": 1}, "learning_rte, zeta: unknown parameter(s)"),
])
def test_from_dict_refuses_bad_values_naming_the_field(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        HeteroLRParams.from_dict(values)
    assert str(caught.value).startswith(message)


def test_learning_rate_schedule_is_fates() -> None:
    assert HeteroLRParams(learning_rate=0.2, decay=1.0).learning_rate_at(3) == pytest.approx(0.1)
    assert HeteroLRParams(learning_rate=0.2, decay=0.5, decay_sqrt=False).learning_rate_at(2) == pytest.approx(0.1)
    assert HeteroLRParams(learning_rate=0.2, decay=0.0).learning_rate_at(9) == 0.2


@pytest.mark.parametrize(("optimizer", "expected_delta"), [
    ("sgd", [0.05, -0.2]),                                             # lr g
    ("rmsprop", [0.1 * 0.5 / np.sqrt(0.0025 + 1e-6), 0.1 * -2 / np.sqrt(0.04 + 1e-6)]),  # m = 0.01 g^2
    ("adagrad", [0.1 * 0.5 / (0.5 + 1e-7), 0.1 * -2 / (2 + 1e-7)]),   # s = g^2
    ("adam", [0.1 * 0.5 / (0.5 + 1e-8), 0.1 * -2 / (2 + 1e-8)]),      # bias-corrected m = g, v = g^2
    ("nesterov_momentum_sgd", [1.9 * 0.05, 1.9 * -0.2]),              # v = -lr g; delta = -(1 + 0.9) v
])
def test_first_step_of_each_optimizer(optimizer: str, expected_delta: list[float]) -> None:
    params = HeteroLRParams(optimizer=optimizer, learning_rate=0.1, penalty="none")
    weights = np.array([1.0, 1.0])
    updated = make_optimizer(params, np.array([True, True])).update(weights, np.array([0.5, -2.0]), epoch=0)
    np.testing.assert_allclose(weights - updated, expected_delta, rtol=1e-12)


def test_penalties_spare_the_intercept() -> None:
    gradient, weights, penalised = np.zeros(3), np.array([2.0, -0.05, 3.0]), np.array([True, True, False])
    l2 = make_optimizer(HeteroLRParams(optimizer="sgd", penalty="L2", alpha=0.5, learning_rate=0.1), penalised)
    np.testing.assert_allclose(l2.update(weights, gradient, 0), [2.0 - 0.1 * 1.0, -0.05 + 0.1 * 0.025, 3.0])
    l1 = make_optimizer(HeteroLRParams(optimizer="sgd", penalty="L1", alpha=1.0, learning_rate=0.1), penalised)
    np.testing.assert_allclose(l1.update(weights, gradient, 0), [1.9, 0.0, 3.0])  # soft threshold by alpha lr


@pytest.mark.parametrize(("early_stop", "tol", "epochs"), [("abs", 100.0, 1), ("weight_diff", 100.0, 1),
                                                           ("diff", 100.0, 2), ("diff", 0.0, 3)])
def test_every_party_stops_when_the_arbiter_says_so(keys: Keys, early_stop: str, tol: float, epochs: int) -> None:
    split = breast_split(1)
    params = HeteroLRParams.from_dict({**BASE, "early_stop": early_stop, "tol": tol, "max_iter": 3})
    results = train(split, params, keys)
    reports = [results[ARBITER], results[GUEST][1], results["host-1"][1]]
    assert {(report.epochs, report.converged) for report in reports} == {(epochs, epochs < 3)}


@pytest.mark.parametrize("init_method", ["random_uniform", "random_normal"])
def test_random_initialisations_are_seeded_and_differ_by_party(keys: Keys, init_method: str) -> None:
    split = breast_split(1)
    params = HeteroLRParams.from_dict({**BASE, "init_method": init_method, "max_iter": 1, "learning_rate": 1e-9,
                                       "fit_intercept": False})
    first, again = train(split, params, keys), train(split, params, keys)
    guest, host = first[GUEST][0].weights, first["host-1"][0].weights
    np.testing.assert_allclose(guest, again[GUEST][0].weights, atol=1e-6)
    assert not np.allclose(guest, host[: len(guest)], atol=1e-3)
    assert (guest.min() >= -1e-6) if init_method == "random_uniform" else (guest.min() < 0 < guest.max())
    assert first[GUEST][0].intercept == 0.0


def test_l1_gives_sparser_weights_than_l2_with_a_large_alpha(keys: Keys) -> None:
    split = breast_split(1)
    zeros = {}
    for penalty in ("L1", "L2"):
        params = HeteroLRParams.from_dict({**BASE, "penalty": penalty, "alpha": 0.1, "optimizer": "sgd",
                                           "learning_rate": 0.5, "max_iter": 8})
        results = train(split, params, keys)
        weights = np.concatenate([results[GUEST][0].weights, results["host-1"][0].weights])
        zeros[penalty] = int(np.sum(weights == 0.0))
    assert zeros["L1"] >= 10 and zeros["L2"] == 0


# -- (e) a peer that stops responding ----------------------------------------------------------------


class SilencedAfter:
    """A transport that stops carrying a party's messages from the first tag with ``prefix`` on (a crash)."""

    def __init__(self, inner: Any, party: str, prefix: str) -> None:
        self.inner, self.party, self.prefix = inner, party, prefix
        self.silent_since: float | None = None

    def send(self, job_id: str, tag: str, src: str, dst: str, payload: bytes) -> None:
        if src == self.party and (self.silent_since is not None or tag.startswith(self.prefix)):
            self.silent_since = self.silent_since or time.monotonic()
            return
        self.inner.send(job_id, tag, src, dst, payload)


def test_a_silent_host_makes_the_guest_and_the_arbiter_time_out_naming_it(keys: Keys) -> None:
    split = breast_split(1)
    timeout_s = 4.0
    params = HeteroLRParams.from_dict({**BASE, "max_iter": 5})
    federation = MemoryFederation([GUEST, ARBITER, "host-1"], allow_insecure_keys=True)
    transport = SilencedAfter(federation.transport, "host-1", "train.e1.")
    results = run_roles({
        ARBITER: lambda: _timed(lambda: fit_arbiter(_ctx(federation, transport, ARBITER, timeout_s), params, GUEST,
                                                    ["host-1"], keypair=keys)),
        GUEST: lambda: _timed(lambda: fit_guest(_ctx(federation, transport, GUEST, timeout_s), params, split.guest.X,
                                                split.y, split.guest.ids, ["host-1"], ARBITER)),
        "host-1": lambda: _timed(lambda: fit_host(_ctx(federation, transport, "host-1", timeout_s), params,
                                                  split.hosts["host-1"].X, split.hosts["host-1"].ids, GUEST, ARBITER)),
    })
    for party in (GUEST, ARBITER):
        error, ended = results[party]
        assert isinstance(error, PeerTimeout) and error.peer == "host-1" and error.tag.startswith("train.e1.b0.")
        assert "host-1" in str(error) and f"{timeout_s:.1f} s" in str(error)
        assert transport.silent_since is not None and ended - transport.silent_since <= timeout_s + 2.0


def _ctx(federation: MemoryFederation, transport: Any, party: str, timeout_s: float) -> FederationContext:
    return FederationContext("train", party, transport, federation.mailbox(party), timeout_s, allow_insecure_keys=True)


def _timed(role: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """(the exception the role raised, or None; when it ended)."""
    try:
        role()
    except Exception as error:  # the test inspects it
        return error, time.monotonic()
    return None, time.monotonic()


# -- (f) prediction and evaluation ----------------------------------------------------------------------


def test_prediction_reproduces_the_trained_model_on_the_training_ids(keys: Keys) -> None:
    split = breast_split(1)
    results = train(split, HeteroLRParams.from_dict({**BASE, "max_iter": 3}), keys)
    guest_model, host_model = results[GUEST][0], results["host-1"][0]
    stored_guest, stored_host = GuestModel.from_dict(guest_model.to_dict()), HostModel.from_dict(
        {"role": "host", **host_model.to_dict()})
    federation = MemoryFederation([GUEST, "host-1"])
    host = split.hosts["host-1"]
    scored = run_roles({
        GUEST: lambda: predict_guest(federation.context("score", GUEST), stored_guest, split.guest.X,
                                     split.guest.ids, ["host-1"]),
        "host-1": lambda: predict_host(federation.context("score", "host-1"), stored_host, host.X, host.ids, GUEST,
                                       psi_key_bits=1024),
    })
    rows, probabilities = scored[GUEST]
    assert scored["host-1"] == len(rows) == len(split.shared)
    ids = [split.guest.ids[row] for row in rows]
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-decision(split, results, ids))), rtol=1e-9)


def test_the_guest_reports_the_final_models_train_metrics_and_every_role_times_its_epochs(keys: Keys) -> None:
    split = breast_split(1)
    epochs: dict[str, list[EpochDone]] = {GUEST: [], ARBITER: [], "host-1": []}
    decrypted: list[int] = []
    federation = MemoryFederation([GUEST, ARBITER, "host-1"], allow_insecure_keys=True)
    recorder = RecordingTransport(federation.transport)
    hooks: dict[str, dict[str, Any]] = {role: {"on_epoch": seen.append} for role, seen in epochs.items()}
    hooks[ARBITER]["on_decrypt"] = decrypted.append
    results = train(split, HeteroLRParams.from_dict({**BASE, "max_iter": 3, "batch_size": 200}), keys, hooks=hooks,
                    contexts=lambda party: FederationContext("train", party, recorder, federation.mailbox(party), 30.0,
                                                             allow_insecure_keys=True))
    # the guest's metrics are those of the trained split model on the shared rows, recomputed here
    ids = sorted(split.shared)
    labels = split.y[_rows_of(split.guest.ids, ids)]
    probability = 1 / (1 + np.exp(-decision(split, results, ids)))
    metrics = results[GUEST][1].metrics
    expected = evaluate_binary(labels, probability)
    assert metrics.keys() == expected.keys() and all(abs(metrics[k] - expected[k]) <= 1e-9 for k in expected)
    assert abs(metrics["auc"] - roc_auc_score(labels, probability)) <= 1e-9 and 0.9 < metrics["auc"] <= 1.0
    assert results["host-1"][1].metrics == {} and results[ARBITER].metrics == {}
    # each role reported each epoch once, in order, with its duration; the arbiter with the loss it decrypted
    for role, seen in epochs.items():
        assert [e.epoch for e in seen] == [1, 2, 3] and all(e.seconds > 0 for e in seen), role
    assert [e.loss for e in epochs[ARBITER]] == results[ARBITER].losses and epochs[GUEST][0].loss is None
    # the arbiter counted exactly the ciphertexts it was sent to decrypt: masked gradients and losses
    public = keys[0]
    sent = [value for _, tag, value in recorder.received(ARBITER, public) if tag.endswith((".gradient", ".loss"))]
    assert len(sent) == 3 * -(-len(split.shared) // 200) * 3  # epochs x batches x (2 gradients + 1 loss)
    assert sum(decrypted) == sum(len(v.ciphertexts) if isinstance(v, PackedArray) else len(v) for v in sent)  # type: ignore[union-attr, arg-type]


def test_model_documents_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="weights"):
        HostModel.from_dict({"weights": [1.0, "x"], "mean": [0.0], "scale": [1.0]})
    with pytest.raises(ValueError, match="one positive-scale entry per feature"):
        HostModel.from_dict({"weights": [1.0], "mean": [0.0], "scale": [0.0]})
    with pytest.raises(ValueError, match="intercept"):
        GuestModel.from_dict({"weights": [1.0], "mean": [0.0], "scale": [1.0], "intercept": float("inf")})


def test_evaluate_binary_matches_sklearn_and_a_hand_computed_ks() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.35 * y + rng.random(300) * 0.65, 0, 1)
    metrics = evaluate_binary(y, p)
    predicted = (p > 0.5).astype(int)
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["precision"] == pytest.approx(precision_score(y, predicted))
    assert metrics["recall"] == pytest.approx(recall_score(y, predicted))
    ks = max(np.mean(p[y == 1] >= t) - np.mean(p[y == 0] >= t) for t in np.unique(p))
    assert metrics["ks"] == pytest.approx(ks) and 0.3 < ks < 1.0
    one_class = evaluate_binary(np.ones(4), np.full(4, 0.9))
    assert np.isnan(one_class["auc"]) and np.isnan(one_class["ks"]) and one_class["accuracy"] == 1.0

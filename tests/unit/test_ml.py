"""fedcore.ml: gradients, local training, metrics and weight validation."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression as SklearnLogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from fedcore.data import combine_statistics, feature_statistics, standardize
from fedcore.ml.metrics import Metrics, evaluate, weighted_mean
from fedcore.ml.models import (
    MLP,
    LogisticRegression,
    Model,
    ModelConfig,
    VectorModel,
    Weights,
    build_model,
    check_weights,
)
from fedcore.ml.training import LocalResult, TrainConfig, train_local

BINARY_LR = ModelConfig("logistic_regression", n_features=5, n_classes=2)
MULTINOMIAL_LR = ModelConfig("logistic_regression", n_features=5, n_classes=4)
BINARY_MLP = ModelConfig("mlp", n_features=5, n_classes=2, hidden_units=(7, 3))
MULTINOMIAL_MLP = ModelConfig("mlp", n_features=5, n_classes=3, hidden_units=(6,))
DENSE_CONFIGS = [BINARY_LR, MULTINOMIAL_LR, BINARY_MLP, MULTINOMIAL_MLP]


def _problem(config: ModelConfig, seed: int = 0) -> tuple[Model, Weights, np.ndarray, np.ndarray]:
    """A model with random (non-zero) weights and a small random data set."""
    rng = np.random.default_rng(seed)
    model = build_model(config)
    weights = [rng.normal(0.0, 0.5, shape).astype(np.float32) for shape in model.shapes()]
    X = rng.normal(size=(40, config.n_features))
    y = rng.integers(0, config.n_classes, size=40)
    return model, weights, X, y


def _numeric_gradient(objective, weights: Weights, step: float = 1e-6) -> Weights:
    """Central finite differences of objective(weights) in float64."""
    params = [w.astype(np.float64) for w in weights]
    grads = []
    for tensor in params:
        grad = np.zeros_like(tensor)
        for index in np.ndindex(tensor.shape):
            original = tensor[index]
            tensor[index] = original + step
            up = objective(params)
            tensor[index] = original - step
            down = objective(params)
            tensor[index] = original
            grad[index] = (up - down) / (2 * step)
        grads.append(grad)
    return grads


def _standardized_split(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    sums, sums_sq = feature_statistics(X_train)
    mean, scale = combine_statistics([len(X_train)], [sums], [sums_sq])
    return standardize(X_train, mean, scale), standardize(X_test, mean, scale), y_train, y_test


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _standardized_split(*load_breast_cancer(return_X_y=True))


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return _standardized_split(*load_iris(return_X_y=True))


# --- models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", DENSE_CONFIGS, ids=lambda c: f"{c.type}-{c.n_classes}")
def test_loss_and_grad_matches_finite_differences(config: ModelConfig) -> None:
    model, weights, X, y = _problem(config)
    _, grads = model.loss_and_grad(weights, X, y)
    numeric = _numeric_gradient(lambda params: model.loss_and_grad(params, X, y)[0], weights)
    for analytic, expected in zip(grads, numeric):
        np.testing.assert_allclose(analytic, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", DENSE_CONFIGS, ids=lambda c: f"{c.type}-{c.n_classes}")
def test_l2_step_follows_gradient_of_penalised_loss(config: ModelConfig) -> None:
    """One full-batch step moves by -lr * d/dw [loss + alpha/2 * |kernels|^2]; biases are not penalised."""
    model, weights, X, y = _problem(config)
    alpha, lr = 0.3, 0.01

    def penalised(params: Weights) -> float:
        kernels = sum(float(np.sum(p**2)) for p in params if p.ndim == 2)
        return model.loss_and_grad(params, X, y)[0] + 0.5 * alpha * kernels

    step = TrainConfig(local_epochs=1, batch_size=0, learning_rate=lr, penalty="l2", alpha=alpha)
    result = train_local(model, weights, X, y, step)
    for before, after, expected in zip(weights, result.weights, _numeric_gradient(penalised, weights)):
        implied = (before.astype(np.float64) - after) / lr
        np.testing.assert_allclose(implied, expected, rtol=1e-3, atol=2e-4)


def test_predict_proba_rows_sum_to_one_and_binary_has_two_columns() -> None:
    for config in DENSE_CONFIGS:
        model, weights, X, _ = _problem(config)
        proba = model.predict_proba(weights, X)
        assert proba.shape == (len(X), config.n_classes)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert (proba >= 0).all()


def test_binary_head_is_stable_for_huge_logits() -> None:
    model = build_model(BINARY_LR)
    weights = [np.full((5, 1), 1e4, dtype=np.float32), np.zeros(1, dtype=np.float32)]
    X = np.array([[1.0] * 5, [-1.0] * 5])
    loss, grads = model.loss_and_grad(weights, X, np.array([1, 0]))
    assert loss == pytest.approx(0.0, abs=1e-12)
    assert all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(model.predict_proba(weights, X), [[0.0, 1.0], [1.0, 0.0]])


def test_build_model_picks_family_and_shapes() -> None:
    assert isinstance(build_model(BINARY_LR), LogisticRegression)
    assert isinstance(build_model(BINARY_MLP), MLP)
    assert isinstance(build_model(ModelConfig("vector", 0, 0, vector_size=9)), VectorModel)
    assert build_model(BINARY_LR).shapes() == [(5, 1), (1,)]
    assert build_model(MULTINOMIAL_LR).shapes() == [(5, 4), (4,)]
    assert build_model(BINARY_MLP).shapes() == [(5, 7), (7,), (7, 3), (3,), (3, 1), (1,)]
    assert build_model(ModelConfig("vector", 0, 0, vector_size=9)).shapes() == [(9,)]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ModelConfig("forest", 5, 2), "unknown model type 'forest'"),
        (ModelConfig("logistic_regression", 0, 2), "n_features"),
        (ModelConfig("logistic_regression", 5, 1), "n_classes"),
        (ModelConfig("logistic_regression", 5, 2, hidden_units=(4,)), "hidden_units"),
        (ModelConfig("mlp", 5, 2), "hidden_units"),
        (ModelConfig("mlp", 5, 2, hidden_units=(4, 0)), "hidden_units"),
        (ModelConfig("mlp", 5, 2, hidden_units=(4,), vector_size=3), "vector_size"),
        (ModelConfig("vector", 5, 2), "vector_size"),
    ],
)
def test_build_model_rejects_bad_configs(config: ModelConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_init_weights_float32_and_shaped() -> None:
    for config in [*DENSE_CONFIGS, ModelConfig("vector", 0, 0, vector_size=11)]:
        model = build_model(config)
        weights = model.init_weights(np.random.default_rng(0))
        assert [w.shape for w in weights] == model.shapes()
        assert all(w.dtype == np.float32 for w in weights)
        check_weights(model, weights)
    lr_weights = build_model(MULTINOMIAL_LR).init_weights(np.random.default_rng(0))
    assert not any(w.any() for w in lr_weights)


def test_mlp_init_uses_he_scale_and_is_seeded() -> None:
    model = build_model(ModelConfig("mlp", n_features=200, n_classes=2, hidden_units=(300,)))
    first = model.init_weights(np.random.default_rng(1))
    assert np.std(first[0]) == pytest.approx(np.sqrt(2 / 200), rel=0.05)
    assert not first[1].any()
    again = model.init_weights(np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_loss_and_grad_rejects_bad_labels_and_features() -> None:
    model, weights, X, y = _problem(MULTINOMIAL_LR)
    with pytest.raises(ValueError, match="0..3"):
        model.loss_and_grad(weights, X, np.full(len(X), 4))
    with pytest.raises(ValueError, match="integers"):
        model.loss_and_grad(weights, X, y.astype(float))
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        model.loss_and_grad(weights, X[:, :4], y)


def test_vector_model_has_no_predictor() -> None:
    model = build_model(ModelConfig("vector", 0, 0, vector_size=3))
    with pytest.raises(TypeError):
        model.predict_proba(model.init_weights(np.random.default_rng(0)), np.zeros((2, 1)))


# --- check_weights ----------------------------------------------------------------------------


def test_check_weights_rejects_wrong_count() -> None:
    model, weights, _, _ = _problem(BINARY_MLP)
    with pytest.raises(ValueError, match=r"expected 6 weight tensors, got 5 \(tensor 5"):
        check_weights(model, weights[:-1])
    with pytest.raises(ValueError, match=r"expected 6 weight tensors, got 7 \(tensor 6"):
        check_weights(model, [*weights, weights[0]])


def test_check_weights_rejects_wrong_shape() -> None:
    model, weights, _, _ = _problem(BINARY_MLP)
    weights[2] = weights[2].T
    with pytest.raises(ValueError, match=r"weight tensor 2: expected shape \(7, 3\), got \(3, 7\)"):
        check_weights(model, weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_weights_rejects_non_finite(bad: float) -> None:
    model, weights, _, _ = _problem(BINARY_MLP)
    weights[3][1] = bad
    with pytest.raises(ValueError, match="weight tensor 3 contains NaN or Inf"):
        check_weights(model, weights)


# --- train_local ------------------------------------------------------------------------------


BREAST_CANCER_LR = ModelConfig("logistic_regression", 30, 2)


def _fit(config: ModelConfig, X: np.ndarray, y: np.ndarray, train: TrainConfig) -> tuple[Model, LocalResult]:
    """Train a freshly (and reproducibly) initialised model."""
    model = build_model(config)
    return model, train_local(model, model.init_weights(np.random.default_rng(0)), X, y, train)


@pytest.mark.parametrize("config", [BREAST_CANCER_LR, ModelConfig("mlp", 30, 2, (32,))])
def test_train_local_breast_cancer_auc(config: ModelConfig, breast_cancer) -> None:
    X_train, X_test, y_train, y_test = breast_cancer
    model, result = _fit(config, X_train, y_train, TrainConfig(local_epochs=10, alpha=1e-3))
    assert result.n_samples == len(X_train)
    assert all(w.dtype == np.float32 for w in result.weights)
    assert evaluate(model, result.weights, X_test, y_test).auc > 0.98


def test_train_local_multinomial_iris_accuracy(iris) -> None:
    X_train, X_test, y_train, y_test = iris
    model, result = _fit(ModelConfig("logistic_regression", 4, 3), X_train, y_train, TrainConfig(local_epochs=50))
    assert evaluate(model, result.weights, X_test, y_test).accuracy > 0.85


def test_train_loss_is_mean_over_last_epoch_and_decreases(breast_cancer) -> None:
    X_train, _, y_train, _ = breast_cancer
    _, one = _fit(BREAST_CANCER_LR, X_train, y_train, TrainConfig(local_epochs=1, batch_size=0))
    assert one.train_loss == pytest.approx(math.log(2))  # full batch from zeros: loss before the only step
    _, five = _fit(BREAST_CANCER_LR, X_train, y_train, TrainConfig(local_epochs=5))
    assert five.train_loss < 0.2


def test_l1_with_large_alpha_zeroes_kernels_but_not_bias(breast_cancer) -> None:
    X_train, _, y_train, _ = breast_cancer
    _, sparse = _fit(BREAST_CANCER_LR, X_train, y_train, TrainConfig(local_epochs=3, penalty="l1", alpha=0.05))
    _, dense = _fit(BREAST_CANCER_LR, X_train, y_train, TrainConfig(local_epochs=3, penalty="none"))
    n_zero = int(np.sum(sparse.weights[0] == 0.0))
    assert 0 < n_zero < 30 and np.sum(dense.weights[0] == 0.0) == 0
    _, heavy = _fit(BREAST_CANCER_LR, X_train, y_train, TrainConfig(local_epochs=3, penalty="l1", alpha=10.0))
    assert not heavy.weights[0].any()
    assert heavy.weights[1][0] != 0.0


def test_train_local_is_deterministic_in_seed(breast_cancer) -> None:
    X_train, _, y_train, _ = breast_cancer
    model = build_model(ModelConfig("mlp", 30, 2, (8,)))
    start = model.init_weights(np.random.default_rng(0))
    runs = [train_local(model, start, X_train, y_train, TrainConfig(seed=seed)).weights for seed in (3, 3, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_local_does_not_mutate_input_weights(dtype: type) -> None:
    model, weights, X, y = _problem(BINARY_MLP)
    weights = [w.astype(dtype) for w in weights]
    snapshot = [w.copy() for w in weights]
    for penalty in ("none", "l2", "l1"):
        train_local(model, weights, X, y, TrainConfig(penalty=penalty, alpha=0.1, batch_size=8))
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(weights, snapshot))


def test_train_local_rejects_poisoned_weights() -> None:
    model, weights, X, y = _problem(BINARY_LR)
    weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="tensor 0"):
        train_local(model, weights, X, y, TrainConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"local_epochs": 0}, "local_epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"penalty": "elasticnet"}, "penalty"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_train_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_vector_model_adds_seeded_float32_noise() -> None:
    model = build_model(ModelConfig("vector", 0, 0, vector_size=100_000))
    start = [np.full(100_000, 2.0, dtype=np.float32)]
    config = TrainConfig(learning_rate=0.5, seed=7)
    result = train_local(model, start, np.zeros((13, 1)), np.zeros(13, dtype=np.int64), config)
    (update,) = result.weights
    assert update.dtype == np.float32 and update.shape == (100_000,)
    assert (result.n_samples, result.train_loss) == (13, 0.0)
    step = (update - 2.0) / 0.5
    assert abs(step.mean()) < 0.02 and step.std() == pytest.approx(1.0, rel=0.02)
    again = train_local(model, start, np.zeros((13, 1)), np.zeros(13, dtype=np.int64), config)
    assert np.array_equal(again.weights[0], update)
    assert (start[0] == 2.0).all()


def test_vector_model_stays_float32_at_ten_million_parameters() -> None:
    """Peak extra memory stays near one float32 copy (40 MB); a float64 detour would need 80 MB more."""
    size = 10_000_000
    model = build_model(ModelConfig("vector", 0, 0, vector_size=size))
    start = [np.zeros(size, dtype=np.float32)]
    tracemalloc.start()
    result = train_local(model, start, np.zeros((1, 1)), np.zeros(1, dtype=np.int64), TrainConfig())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.weights[0].dtype == np.float32
    assert peak < 60 * 2**20


# --- metrics ----------------------------------------------------------------------------------


def _sklearn_weights(clf: SklearnLogisticRegression) -> Weights:
    return [clf.coef_.T.astype(np.float32), clf.intercept_.astype(np.float32)]


@pytest.mark.parametrize("data", ["breast_cancer", "iris"])
def test_evaluate_matches_sklearn(data: str, request: pytest.FixtureRequest) -> None:
    X_train, X_test, y_train, y_test = request.getfixturevalue(data)
    clf = SklearnLogisticRegression(C=0.1).fit(X_train, y_train)
    model = build_model(ModelConfig("logistic_regression", X_train.shape[1], len(clf.classes_)))
    metrics = evaluate(model, _sklearn_weights(clf), X_test, y_test)
    proba = clf.predict_proba(X_test)
    if len(clf.classes_) == 2:
        expected_auc = roc_auc_score(y_test, proba[:, 1])
    else:
        expected_auc = roc_auc_score(y_test, proba, multi_class="ovr", average="macro")
    assert metrics.loss == pytest.approx(log_loss(y_test, proba), rel=1e-5)
    assert metrics.accuracy == accuracy_score(y_test, clf.predict(X_test))
    assert metrics.auc == pytest.approx(expected_auc, rel=1e-6)
    assert metrics.n_samples == len(X_test)


def test_evaluate_auc_undefined_with_one_class_and_multiclass_uses_present_classes(iris) -> None:
    X_train, X_test, y_train, y_test = iris
    model = build_model(ModelConfig("logistic_regression", 4, 3))
    weights = _sklearn_weights(SklearnLogisticRegression().fit(X_train, y_train))
    only_ones = y_test == 1
    single = evaluate(model, weights, X_test[only_ones], y_test[only_ones])
    assert math.isnan(single.auc) and single.accuracy > 0.5
    two = y_test != 2
    proba = model.predict_proba(weights, X_test[two])
    expected = np.mean([roc_auc_score(y_test[two] == c, proba[:, c]) for c in (0, 1)])
    assert evaluate(model, weights, X_test[two], y_test[two]).auc == pytest.approx(expected)


def test_evaluate_vector_and_empty() -> None:
    vector = build_model(ModelConfig("vector", 0, 0, vector_size=4))
    metrics = evaluate(vector, vector.init_weights(np.random.default_rng(0)), np.zeros((6, 2)), np.zeros(6, dtype=int))
    assert (metrics.loss, metrics.accuracy, metrics.n_samples) == (0.0, 0.0, 6) and math.isnan(metrics.auc)
    model, weights, X, y = _problem(BINARY_LR)
    empty = evaluate(model, weights, X[:0], y[:0])
    assert empty.n_samples == 0 and math.isnan(empty.loss) and math.isnan(empty.accuracy)


def test_weighted_mean_weights_by_samples_and_skips_nan_auc() -> None:
    combined = weighted_mean(
        [
            Metrics(loss=1.0, accuracy=0.5, auc=0.6, n_samples=10),
            Metrics(loss=2.0, accuracy=1.0, auc=math.nan, n_samples=30),
            Metrics(loss=math.nan, accuracy=math.nan, auc=math.nan, n_samples=0),
            Metrics(loss=4.0, accuracy=0.0, auc=0.9, n_samples=20),
        ]
    )
    assert combined.loss == pytest.approx((10 * 1.0 + 30 * 2.0 + 20 * 4.0) / 60)
    assert combined.accuracy == pytest.approx((10 * 0.5 + 30 * 1.0) / 60)
    assert combined.auc == pytest.approx((10 * 0.6 + 20 * 0.9) / 30)
    assert combined.n_samples == 60
    assert math.isnan(weighted_mean([]).loss)

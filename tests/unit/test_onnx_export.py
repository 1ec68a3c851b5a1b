"""fedsuite.onnx_export: every model shape (binary and softmax heads, hidden layers or none, with and without
standardisation) scores in onnxruntime as fedsuite.predict does; a model that scores nothing is refused."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from fedcore.ml.models import build_model
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import DownloadedModel
from fedsuite.onnx_export import to_onnx
from fedsuite.predict import predict_proba
from fedsuite.translate import model_config


def random_model(rng: np.random.Generator, spec: pb.ModelSpec, n_classes: int, scaled: bool) -> DownloadedModel:
    n_features = 5
    info = pb.ModelInfo(model=spec, round=4, n_features=n_features, n_classes=n_classes)
    if scaled:
        info.feature_mean.extend(rng.normal(scale=100, size=n_features).tolist())
        info.feature_scale.extend(rng.uniform(0.01, 50, size=n_features).tolist())
    shapes = build_model(model_config(spec, n_features, n_classes)).shapes()
    return DownloadedModel(info, [rng.normal(size=shape).astype(np.float32) for shape in shapes])


@pytest.mark.parametrize("hidden", [[], [6], [7, 3]])
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("scaled", [True, False])
def test_onnxruntime_gives_fedsuites_probabilities(hidden: list[int], n_classes: int, scaled: bool) -> None:
    rng = np.random.default_rng(len(hidden) * 10 + n_classes + scaled)
    kind = pb.MODEL_TYPE_MLP if hidden else pb.MODEL_TYPE_LOGISTIC_REGRESSION
    model = random_model(rng, pb.ModelSpec(type=kind, hidden_units=hidden), n_classes, scaled)
    X = rng.normal(loc=np.asarray(model.info.feature_mean or [0.0] * 5), scale=30, size=(200, 5))
    session = onnxruntime.InferenceSession(to_onnx(model, "job-1").SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    probabilities, predicted = session.run(None, {"features": X})
    expected = predict_proba(model, X)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-9)
    assert predicted.dtype == np.int64 and predicted.tolist() == expected.argmax(axis=1).tolist()


def test_a_vector_model_has_no_onnx_graph() -> None:
    info = pb.ModelInfo(model=pb.ModelSpec(type=pb.MODEL_TYPE_VECTOR, vector_size=3), n_features=1, n_classes=2)
    with pytest.raises(ValueError, match="^a 'vector' model does not depend on data and scores nothing"):
        to_onnx(DownloadedModel(info, [np.zeros(3, dtype=np.float32)]), "job-1")

"""A horizontal job's global model as ONNX, so any ONNX runtime scores rows as ``fedsuite predict`` does.

The graph takes ``features``, double (n, n_features) raw rows in the job's feature order, and
gives ``probabilities``, double (n, n_classes), and ``predicted``, int64 (n,), the most likely
class. The job's federated standardisation is folded into the first layer: with mean m and
scale s, ((x - m) / s) W + b = x (W / s) + (b - (m / s) W), so no separate scaling step can be
forgotten. Everything is double: fedsuite computes in float64 over float32 weights, and so does
the graph, which keeps its probabilities within rounding of fedsuite's.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fedcore.ml.models import VectorModel, build_model

from fedsuite.client import DownloadedModel
from fedsuite.translate import model_config

OPSET = 17
"""ONNX opset of the graph (2022: every ONNX Runtime since 1.13 runs it); IR version 8 goes with it."""
IR_VERSION = 8
INPUT, PROBABILITIES, PREDICTED = "features", "probabilities", "predicted"


def folded_layers(model: DownloadedModel) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) per dense layer in float64, the standardisation folded into the first; ValueError for a
    model that scores nothing."""
    info = model.info
    if isinstance(build_model(model_config(info.model, info.n_features, info.n_classes)), VectorModel):
        raise ValueError("a 'vector' model does not depend on data and scores nothing: there is no ONNX graph for it")
    tensors = [np.asarray(w, dtype=np.float64) for w in model.weights]
    layers = list(zip(tensors[0::2], tensors[1::2]))
    if info.feature_mean:
        mean, scale = np.asarray(info.feature_mean), np.asarray(info.feature_scale)
        kernel, bias = layers[0]
        layers[0] = (kernel / scale[:, None], bias - (mean / scale) @ kernel)
    return layers


def to_onnx(model: DownloadedModel, job_id: str) -> onnx.ModelProto:
    """The checked ONNX model of the module docstring."""
    info = model.info
    layers = folded_layers(model)
    nodes, initializers = [], []
    current = INPUT
    for index, (kernel, bias) in enumerate(layers):
        initializers += [numpy_helper.from_array(kernel, f"kernel_{index}"), numpy_helper.from_array(bias, f"bias_{index}")]
        nodes += [helper.make_node("MatMul", [current, f"kernel_{index}"], [f"product_{index}"]),
                  helper.make_node("Add", [f"product_{index}", f"bias_{index}"], [f"logits_{index}"])]
        current = f"logits_{index}"
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"hidden_{index}"]))
            current = f"hidden_{index}"
    if info.n_classes == 2:  # one logit z: P = [1 - sigmoid(z), sigmoid(z)], as fedsuite writes it
        initializers.append(numpy_helper.from_array(np.ones((1, 1)), "one"))
        nodes += [helper.make_node("Sigmoid", [current], ["p1"]),
                  helper.make_node("Sub", ["one", "p1"], ["p0"]),
                  helper.make_node("Concat", ["p0", "p1"], [PROBABILITIES], axis=1)]
    else:
        nodes.append(helper.make_node("Softmax", [current], [PROBABILITIES], axis=1))
    nodes.append(helper.make_node("ArgMax", [PROBABILITIES], [PREDICTED], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes, f"fedsuite_{job_id}",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, ["n", info.n_features])],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.DOUBLE, ["n", info.n_classes]),
         helper.make_tensor_value_info(PREDICTED, TensorProto.INT64, ["n"])],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                   producer_name="fedsuite", producer_version=importlib.metadata.version("fedsuite"),
                                   doc_string=f"fedsuite job {job_id}, round {info.round}: raw features in, "
                                              "class probabilities out (standardisation folded in)")
    helper.set_model_props(onnx_model, {"job_id": job_id, "round": str(info.round),
                                        "model_type": model_config(info.model, info.n_features, info.n_classes).type,
                                        "n_features": str(info.n_features), "n_classes": str(info.n_classes)})
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def save_onnx_file(model: DownloadedModel, job_id: str, path: str | Path) -> None:
    """Write :func:`to_onnx`'s model to ``path``."""
    Path(path).write_bytes(to_onnx(model, job_id).SerializeToString())

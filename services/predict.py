"""Scores for each row, and the files they are kept in.

``fedsuite predict`` scores a CSV (or Parquet file) locally with a model saved by ``fedsuite job download``,
computing exactly what a party computes with it: fedcore.ml.models' ``build_model`` on the
ModelInfo's spec, the ModelInfo's feature mean and scale (the job's federated
standardisation), and fedcore.data's reading (header row, finite numbers, unique ids).
The guest of a vertical predict job writes its per-id scores with :func:`write_scores` too.

The ``.npz`` a download writes (:func:`save_model_file`): ``info``, the ModelInfo as JSON
(proto field names) in a 0-d string array, and ``w0``, ``w1``, ... the model's float32
tensors in ``Model.shapes()`` order (kernel then bias for each dense layer).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from google.protobuf import json_format

from fedcore.data import DatasetConfig, load_dataset, standardize
from fedcore.ml.models import VectorModel, build_model, check_weights
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import DownloadedModel
from fedsuite.translate import model_config

_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_ID_COLUMN = "id"


def checked_scores_path(text: str, field: str = "scores_path") -> PurePosixPath:
    """A scores file's path relative to its directory; ValueError (naming ``field``) for one that
    could leave it: absolute, with '..', or with characters other than letters, digits, '.', '_', '-'."""
    path = PurePosixPath(text)
    if not text or path.is_absolute() or not all(_PATH_PART.match(part) for part in path.parts):
        raise ValueError(f"{field} {text!r} must be a relative path of letters, digits, '.', '_' and '-' "
                         "(each part starting with a letter or digit, so no '..')")
    return path


def write_scores(path: Path, columns: dict[str, Sequence[object]]) -> int:
    """Equal-length columns as a CSV with a header, written to a temporary file and renamed, so a
    reader never sees half a file; returns the row count. Floats keep every digit (repr)."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"score columns of different lengths: {sorted(lengths)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values()))
    os.replace(temp, path)
    return lengths.pop()


def save_model_file(model: DownloadedModel, path: str | Path) -> None:
    """The ``.npz`` layout of the module docstring."""
    info = json_format.MessageToJson(model.info, preserving_proto_field_name=True)
    with open(path, "wb") as handle:
        np.savez(handle, info=np.array(info), **{f"w{i}": w for i, w in enumerate(model.weights)})


def load_model_file(path: str | Path) -> DownloadedModel:
    """Read a ``.npz`` written by :func:`save_model_file`; ValueError naming the file if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            info = json_format.Parse(str(archive["info"]), pb.ModelInfo())
            count = sum(1 for name in archive.files if re.fullmatch(r"w\d+", name))
            weights = [archive[f"w{i}"] for i in range(count)]
    except FileNotFoundError:
        raise FileNotFoundError(f"model file {path} does not exist") from None
    except (OSError, KeyError, ValueError, json_format.ParseError) as err:
        raise ValueError(f"{path} is not a model saved by `fedsuite job download`: {err}") from None
    try:
        check_weights(build_model(model_config(info.model, info.n_features, info.n_classes)), weights)
    except ValueError as err:
        raise ValueError(f"{path}: the tensors do not fit the model its info describes: {err}") from None
    return DownloadedModel(info, weights)


def predict_proba(model: DownloadedModel, X: np.ndarray) -> np.ndarray:
    """Class probabilities (n, n_classes) of the rows X, standardised as the job standardised them."""
    info = model.info
    network = build_model(model_config(info.model, info.n_features, info.n_classes))
    if isinstance(network, VectorModel):
        raise ValueError("a 'vector' model does not depend on data and scores nothing")
    if info.feature_mean:
        X = standardize(X, np.asarray(info.feature_mean), np.asarray(info.feature_scale))
    return network.predict_proba(model.weights, X)


def score_columns(proba: np.ndarray, ids: np.ndarray | None, labels: np.ndarray | None) -> dict[str, Sequence[object]]:
    """The columns of a scores file (see :func:`score_csv`), as every scorer writes them."""
    columns: dict[str, Sequence[object]] = {} if ids is None else {"id": ids.tolist()}
    if proba.shape[1] == 2:
        columns["score"] = proba[:, 1].tolist()
    else:
        columns |= {f"score_{k}": proba[:, k].tolist() for k in range(proba.shape[1])}
        columns["predicted"] = proba.argmax(axis=1).tolist()
    if labels is not None:
        columns["label"] = labels.tolist()
    return columns


def score_csv(model_path: str | Path, data_path: str | Path, out_path: str | Path,
              id_column: str | None = None, label: str | None = None) -> int:
    """Score every row of ``data_path`` into ``out_path``; returns the row count.

    Columns: ``id`` (from ``id_column``, by default ``id`` when the header has it), then ``score``
    (P(class 1)) for a binary model or ``score_0`` ... ``score_{k-1}`` and ``predicted`` for k
    classes, then ``label`` when a label column is named. Every other column is a feature, in
    the order of the file.
    """
    model = load_model_file(model_path)
    data = Path(data_path)
    if id_column is None and DEFAULT_ID_COLUMN in _header(data):
        id_column = DEFAULT_ID_COLUMN
    rows = load_dataset(data.name, DatasetConfig(path=str(data), label=label, id_column=id_column, eval_fraction=0.0))
    if rows.X.shape[1] != model.info.n_features:
        raise ValueError(
            f"{data} has {rows.X.shape[1]} feature columns ({', '.join(rows.feature_names)}); the model takes "
            f"{model.info.n_features}: name the id column with --id-column and the label column with --label")
    columns = score_columns(predict_proba(model, rows.X), rows.ids, rows.y)
    try:
        return write_scores(Path(out_path), columns)
    except OSError as err:
        raise ValueError(f"cannot write {out_path}: {err.strerror or err}") from None


def _header(path: Path) -> list[str]:
    """The file's column names (empty when it has none, or is no Parquet file); fedcore.data reports a missing or
    unreadable file."""
    if not path.is_file():
        return []
    if DatasetConfig(path=str(path)).source_format == "parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            return list(pyarrow.parquet.read_schema(path).names)
        except (pyarrow.ArrowException, OSError):
            return []
    with path.open(newline="") as handle:
        return [column.strip() for column in next(csv.reader(handle), [])]

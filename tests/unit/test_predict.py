"""fedsuite.predict: the .npz a download writes, scoring a CSV with it, and the paths scores may be written to."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import DownloadedModel
from fedsuite.predict import checked_scores_path, load_model_file, save_model_file, score_csv
from tests.tables import write_table


def softmax_model(rng: np.random.Generator, n_features: int = 4, n_classes: int = 3) -> DownloadedModel:
    info = pb.ModelInfo(model=pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION), round=7, n_features=n_features,
                        n_classes=n_classes, feature_mean=rng.normal(size=n_features).tolist(),
                        feature_scale=rng.uniform(0.5, 2.0, size=n_features).tolist())
    weights = [rng.normal(size=(n_features, n_classes)).astype(np.float32), rng.normal(size=n_classes).astype(np.float32)]
    return DownloadedModel(info, weights)


def write_rows(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_a_saved_model_reads_back_tensor_for_tensor(tmp_path: Path) -> None:
    model = softmax_model(np.random.default_rng(1))
    save_model_file(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as archive:
        assert sorted(archive.files) == ["info", "w0", "w1"] and archive["w0"].dtype == np.float32
    loaded = load_model_file(tmp_path / "m.npz")
    assert loaded.info == model.info
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, model.weights, strict=True))


def test_multiclass_scores_are_the_standardised_softmax_with_ids_and_labels_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    model = softmax_model(rng)
    save_model_file(model, tmp_path / "m.npz")
    X = rng.normal(size=(25, 4)) * 3
    ids = [f"row-{i}" for i in range(25)]
    labels = rng.integers(0, 3, 25)
    write_rows(tmp_path / "rows.csv", ["id", "a", "label", "b", "c", "d"],
               [[ids[i], X[i, 0], labels[i], *X[i, 1:]] for i in range(25)])
    assert score_csv(tmp_path / "m.npz", tmp_path / "rows.csv", tmp_path / "out.csv", label="label") == 25
    # computed here from the saved tensors alone
    z = (X - np.asarray(model.info.feature_mean)) / np.asarray(model.info.feature_scale)
    logits = z @ model.weights[0].astype(np.float64) + model.weights[1]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    with open(tmp_path / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "score_0", "score_1", "score_2", "predicted", "label"]
    assert [r["id"] for r in rows] == ids and [int(r["label"]) for r in rows] == labels.tolist()
    scores = np.array([[float(r[f"score_{k}"]) for k in range(3)] for r in rows])
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert [int(r["predicted"]) for r in rows] == expected.argmax(axis=1).tolist()


def test_a_csv_that_does_not_fit_the_model_is_refused_with_a_sentence(tmp_path: Path) -> None:
    save_model_file(softmax_model(np.random.default_rng(3)), tmp_path / "m.npz")
    write_rows(tmp_path / "rows.csv", ["a", "b", "c", "d", "target"], [[1, 2, 3, 4, 0]])
    with pytest.raises(ValueError, match=r"5 feature columns \(a, b, c, d, target\); the model takes 4: .*--label"):
        score_csv(tmp_path / "m.npz", tmp_path / "rows.csv", tmp_path / "out.csv")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is not a model saved by `fedsuite job download`"):
        score_csv(tmp_path / "junk.npz", tmp_path / "rows.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("path", ["../x.csv", "/tmp/x.csv", "a/../../x.csv", ".hidden", "a\\b.csv", "", "a b.csv"])
def test_scores_paths_that_could_leave_their_directory_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="must be a relative path"):
        checked_scores_path(path)


def test_scores_paths_inside_their_directory_are_kept() -> None:
    assert str(checked_scores_path("2026-02/scores.v1.csv")) == "2026-02/scores.v1.csv"


def test_a_parquet_file_scores_as_the_csv_of_the_same_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    save_model_file(softmax_model(rng), tmp_path / "m.npz")
    table = [[f"row-{i}", *rng.normal(size=4).tolist(), int(rng.integers(0, 3))] for i in range(12)]
    written = write_table(tmp_path, "rows", ["id", "a", "b", "c", "d", "label"], table)  # `id` found in either
    for fmt in ("csv", "parquet"):
        assert score_csv(tmp_path / "m.npz", written[fmt]["path"], tmp_path / f"{fmt}.csv", label="label") == 12
    assert (tmp_path / "parquet.csv").read_text() == (tmp_path / "csv.csv").read_text()
    assert (tmp_path / "csv.csv").read_text().startswith("id,score_0,score_1,score_2,predicted,label\nrow-0,")

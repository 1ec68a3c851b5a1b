"""fedcore.data: CSV loading, held-out splits and federated standardisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcore.data import DatasetConfig, combine_statistics, feature_statistics, load_dataset, standardize

HEADER = "id,age,label,income"


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _labelled_csv(path: Path, n: int = 50, seed: int = 0) -> str:
    """n rows: ids r0.., two features, labels 0/1/2 in proportions 50/30/20 %."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [n // 2, 3 * n // 10, n - n // 2 - 3 * n // 10])
    rows = [f"r{i},{rng.normal():.6f},{label},{rng.normal():.6f}" for i, label in enumerate(labels)]
    return _write(path, [HEADER, *rows])


def test_load_with_id_and_label_and_eval_file(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", [HEADER, "a,1.5,0,10", "b,2,1,20", " c , -3e2 , 1.0 , 30 "])
    held_out = _write(tmp_path / "eval.csv", ["income,label,id,age", "40,1,d,4.25"])
    config = DatasetConfig(path=train, label="label", id_column="id", eval_path=held_out)
    dataset = load_dataset("credit", config)
    assert dataset.name == "credit"
    assert dataset.feature_names == ["age", "income"]
    assert dataset.X.dtype == np.float64
    np.testing.assert_array_equal(dataset.X, [[1.5, 10], [2, 20], [-300, 30]])
    assert dataset.y.dtype == np.int64
    np.testing.assert_array_equal(dataset.y, [0, 1, 1])
    assert dataset.ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(dataset.X_eval, [[4.25, 40]])  # reordered to the training columns
    np.testing.assert_array_equal(dataset.y_eval, [1])
    assert dataset.ids_eval.tolist() == ["d"]


def test_load_feature_only_host_data(tmp_path: Path) -> None:
    path = _write(tmp_path / "host.csv", ["x1,x2,x3", "1,2,3", "4,5,6"])
    dataset = load_dataset("host", DatasetConfig(path=path, eval_fraction=0.0))
    assert dataset.feature_names == ["x1", "x2", "x3"]
    np.testing.assert_array_equal(dataset.X, [[1, 2, 3], [4, 5, 6]])
    assert dataset.y is None and dataset.ids is None
    assert dataset.X_eval.shape == (0, 3)
    assert dataset.y_eval is None and dataset.ids_eval is None


def test_load_ids_without_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "host.csv", ["uid,x", "007,1", "8,2"])
    dataset = load_dataset("host", DatasetConfig(path=path, id_column="uid", eval_fraction=0.0))
    assert dataset.ids.tolist() == ["007", "8"]  # ids stay strings: leading zeros survive
    assert dataset.feature_names == ["x"] and dataset.y is None


def test_stratified_split_keeps_class_proportions(tmp_path: Path) -> None:
    path = _labelled_csv(tmp_path / "d.csv", n=50)
    dataset = load_dataset("d", DatasetConfig(path=path, label="label", id_column="id", eval_fraction=0.2))
    assert np.bincount(dataset.y_eval).tolist() == [5, 3, 2]
    assert np.bincount(dataset.y).tolist() == [20, 12, 8]
    assert set(dataset.ids).isdisjoint(dataset.ids_eval)
    assert set(dataset.ids) | set(dataset.ids_eval) == {f"r{i}" for i in range(50)}
    rows = {row_id: (x, y) for row_id, x, y in zip(dataset.ids_eval, dataset.X_eval.tolist(), dataset.y_eval)}
    full = load_dataset("d", DatasetConfig(path=path, label="label", id_column="id", eval_fraction=0.0))
    for row_id, x, y in zip(full.ids, full.X.tolist(), full.y):
        assert rows.get(row_id, (x, y)) == (x, y)  # features and labels stay with their row


def test_split_is_reproducible_by_seed(tmp_path: Path) -> None:
    path = _labelled_csv(tmp_path / "d.csv", n=60)

    def held_out_ids(seed: int) -> list[str]:
        config = DatasetConfig(path=path, label="label", id_column="id", eval_fraction=0.25, seed=seed)
        return load_dataset("d", config).ids_eval.tolist()

    assert held_out_ids(1) == held_out_ids(1)
    assert held_out_ids(1) != held_out_ids(2)


def test_split_without_labels_is_a_plain_fraction(tmp_path: Path) -> None:
    path = _write(tmp_path / "host.csv", ["x", *map(str, range(20))])
    dataset = load_dataset("host", DatasetConfig(path=path, eval_fraction=0.3))
    assert len(dataset.X_eval) == 6 and len(dataset.X) == 14
    assert sorted([*dataset.X[:, 0], *dataset.X_eval[:, 0]]) == list(range(20))


def test_eval_fraction_zero_gives_empty_held_out_labels(tmp_path: Path) -> None:
    path = _labelled_csv(tmp_path / "d.csv", n=10)
    dataset = load_dataset("d", DatasetConfig(path=path, label="label", id_column="id", eval_fraction=0.0))
    assert len(dataset.X) == 10 and dataset.X_eval.shape == (0, 2)
    assert dataset.y_eval.dtype == np.int64 and len(dataset.y_eval) == 0
    assert len(dataset.ids_eval) == 0


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_eval_fraction_must_leave_training_rows(fraction: float) -> None:
    with pytest.raises(ValueError, match="eval_fraction"):
        DatasetConfig(path="unused.csv", eval_fraction=fraction)


def test_split_that_would_empty_the_training_set_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "tiny.csv", ["x,label", "1,0", "2,1"])
    with pytest.raises(ValueError, match="leaves no training rows out of 2"):
        load_dataset("tiny", DatasetConfig(path=path, label="label", eval_fraction=0.6))


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset("d", DatasetConfig(path=str(missing)))


def test_missing_eval_file(tmp_path: Path) -> None:
    path = _labelled_csv(tmp_path / "d.csv", n=10)
    with pytest.raises(FileNotFoundError, match="held.csv"):
        load_dataset("d", DatasetConfig(path=path, label="label", id_column="id", eval_path=str(tmp_path / "held.csv")))


@pytest.mark.parametrize(
    ("lines", "config", "message"),
    [
        ([], {}, r"d\.csv is empty"),
        ([HEADER], {}, r"d\.csv has a header but no data rows"),
        ([HEADER, "a,1,0,2"], {"label": "target"}, r"d\.csv: label column 'target' not found"),
        ([HEADER, "a,1,0,2"], {"id_column": "uid"}, r"d\.csv: id column 'uid' not found"),
        ([HEADER, "a,1,0,2", "b,x,1,3"], {}, r"d\.csv line 3, column 'age': 'x' is not a finite"),
        ([HEADER, "a,1,0,"], {}, r"d\.csv line 2, column 'income': '' is not a finite"),
        ([HEADER, "a,1,0,nan"], {}, r"line 2, column 'income': 'nan' is not a finite"),
        ([HEADER, "a,1,0,2", "b,1,0.5,2"], {}, r"line 3, label column 'label': '0.5' is not"),
        ([HEADER, "a,1,yes,2"], {}, r"line 2, label column 'label': 'yes' is not"),
        ([HEADER, "a,1,-1,2"], {}, r"line 2, label column 'label': '-1' is not a non-negative"),
        ([HEADER, "a,1,0,2", "b,1,0"], {}, r"d\.csv line 3: 3 fields, the header has 4"),
        ([HEADER, "a,1,0,2", "a,1,0,2"], {}, r"id 'a' appears more than once"),
        (["id,x,x,label", "a,1,2,0"], {}, r"d\.csv: header \['id', 'x', 'x', 'label'\] repeats a column name"),
        ([HEADER, "a,1,0,2", "", "b,1,z,2"], {}, r"d\.csv line 4, label column 'label': 'z'"),
    ],
)
def test_load_errors_name_file_and_column(tmp_path: Path, lines: list[str], config: dict, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message):
        load_dataset("d", DatasetConfig(path=str(path), **{"label": "label", "id_column": "id", **config}))


def test_eval_file_with_other_columns_is_rejected(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", ["a,b,label", "1,2,0"])
    held_out = _write(tmp_path / "eval.csv", ["a,c,label", "1,2,0"])
    with pytest.raises(ValueError, match=r"eval\.csv: feature columns \['a', 'c'\] differ"):
        load_dataset("d", DatasetConfig(path=train, label="label", eval_path=held_out))


def test_combine_statistics_equals_pooled_mean_and_std() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[5.0, -2.0, 1e3, 0.0], scale=[1.0, 3.0, 0.5, 2.0], size=(301, 4))
    X[:, 3] = 7.1  # a constant feature: scale 1, not 0
    parties = np.split(X, [40, 190])
    sums, sums_sq = zip(*(feature_statistics(part) for part in parties))
    mean, scale = combine_statistics([len(part) for part in parties], sums, sums_sq)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale[:3], X[:, :3].std(axis=0), rtol=1e-8)
    assert scale[3] == 1.0
    Z = standardize(X, mean, scale)
    np.testing.assert_allclose(Z[:, :3].mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(Z[:, :3].std(axis=0), 1.0, rtol=1e-8)
    np.testing.assert_allclose(Z[:, 3], 0.0, atol=1e-12)


def test_feature_statistics_are_float64_sums() -> None:
    sums, sums_sq = feature_statistics(np.array([[1, 2], [3, -4]], dtype=np.int32))
    assert sums.dtype == sums_sq.dtype == np.float64
    assert sums.tolist() == [4.0, -2.0] and sums_sq.tolist() == [10.0, 20.0]


def test_combine_and_standardize_reject_mismatches() -> None:
    with pytest.raises(ValueError, match="0 rows"):
        combine_statistics([0], [np.zeros(2)], [np.zeros(2)])
    with pytest.raises(ValueError, match="2 counts, 1 sums"):
        combine_statistics([1, 2], [np.zeros(2)], [np.zeros(2), np.zeros(2)])
    with pytest.raises(ValueError, match="do not match"):
        standardize(np.zeros((3, 2)), np.zeros(3), np.ones(3))

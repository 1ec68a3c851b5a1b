"""Datasets a party holds: CSV loading, held-out splits, and federated standardisation.

Standardisation is federated: each party publishes only per-feature sums and sums of squares
(`feature_statistics`), and `combine_statistics` turns them into one global mean and scale.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A variance below this fraction of the feature's mean square is rounding noise from
# E[x^2] - E[x]^2: the feature is treated as constant.
_CONSTANT_TOLERANCE = 1e-12


@dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset lives and which columns play which role."""

    path: str  # CSV with a header row
    label: str | None = None  # None for feature-only (vertical host) data
    id_column: str | None = None
    eval_path: str | None = None  # held-out rows with the same columns, or ...
    eval_fraction: float = 0.2  # ... a stratified split of `path` (0 = no held-out rows)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training and held-out rows; labels are the raw non-negative integers from the file."""

    name: str
    feature_names: list[str]
    X: np.ndarray  # float64
    y: np.ndarray | None  # int64
    ids: np.ndarray | None  # str
    X_eval: np.ndarray  # may have 0 rows
    y_eval: np.ndarray | None
    ids_eval: np.ndarray | None


@dataclass(frozen=True, eq=False)
class _Table:
    """Columns of one CSV, split by role."""

    feature_names: list[str]
    X: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray | None

    def take(self, rows: np.ndarray) -> _Table:
        return _Table(
            self.feature_names,
            self.X[rows],
            None if self.y is None else self.y[rows],
            None if self.ids is None else self.ids[rows],
        )


def load_dataset(name: str, config: DatasetConfig) -> Dataset:
    """Load `config.path`, and its held-out rows from `eval_path` or a seeded stratified split.

    Labels are not remapped (parties must agree on label values); they must be non-negative
    integers, written as "3" or "3.0". Every feature must be a finite number.
    """
    train = _read_table(Path(config.path), config.label, config.id_column)
    if config.eval_path is not None:
        held_out = _read_table(Path(config.eval_path), config.label, config.id_column, train.feature_names)
    else:
        train_rows, eval_rows = _stratified_split(train, config.eval_fraction, config.seed)
        train, held_out = train.take(train_rows), train.take(eval_rows)
    return Dataset(
        name=name,
        feature_names=train.feature_names,
        X=train.X,
        y=train.y,
        ids=train.ids,
        X_eval=held_out.X,
        y_eval=held_out.y,
        ids_eval=held_out.ids,
    )


def feature_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (sum, sum of squares): all a party reveals for global standardisation."""
    X = np.asarray(X, dtype=np.float64)
    return X.sum(axis=0), np.square(X).sum(axis=0)


def combine_statistics(
    counts: Sequence[float], sums: Sequence[np.ndarray], sums_sq: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Global (mean, scale) from parties' row counts and statistics; scale is the population std, 1 where it is 0."""
    if not len(counts) == len(sums) == len(sums_sq):
        raise ValueError(f"got {len(counts)} counts, {len(sums)} sums and {len(sums_sq)} sums of squares")
    n = sum(counts)
    if n <= 0:
        raise ValueError("cannot combine statistics over 0 rows")
    mean = np.sum(sums, axis=0, dtype=np.float64) / n
    mean_sq = np.sum(sums_sq, axis=0, dtype=np.float64) / n
    variance = mean_sq - np.square(mean)
    constant = variance <= _CONSTANT_TOLERANCE * mean_sq
    scale = np.sqrt(np.where(constant, 1.0, variance))
    return mean, scale


def standardize(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(X - mean) / scale, feature by feature."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1:] != np.shape(mean) or np.shape(mean) != np.shape(scale):
        raise ValueError(f"X {X.shape}, mean {np.shape(mean)} and scale {np.shape(scale)} do not match")
    return (X - mean) / scale


def _read_table(path: Path, label: str | None, id_column: str | None, features: list[str] | None = None) -> _Table:
    """Parse one CSV; `features` (from the training file) fixes the feature columns of a held-out file."""
    header, body, lines = _read_rows(path)
    for role, column in (("label", label), ("id", id_column)):
        if column is not None and column not in header:
            raise ValueError(f"{path}: {role} column {column!r} not found in header {header}")
    own_features = [column for column in header if column not in (label, id_column)]
    if features is not None and sorted(own_features) != sorted(features):
        raise ValueError(f"{path}: feature columns {own_features} differ from the training file's {features}")
    features = own_features if features is None else features
    columns = {column: [row[i] for row in body] for i, column in enumerate(header)}
    X = np.empty((len(body), len(features)))
    for j, column in enumerate(features):
        X[:, j] = _floats(path, lines, column, columns[column])
    return _Table(
        feature_names=features,
        X=X,
        y=None if label is None else _labels(path, lines, label, columns[label]),
        ids=None if id_column is None else _ids(path, id_column, columns[id_column]),
    )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, stripped non-blank rows, and each row's line number for error messages."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [column.strip() for column in next(reader, [])]
        body, lines = [], []
        for row in reader:
            if row:
                body.append([value.strip() for value in row])
                lines.append(reader.line_num)
    if not header:
        raise ValueError(f"{path} is empty; expected a header row")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: header {header} repeats a column name")
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    for line, row in zip(lines, body):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
    return header, body, lines


def _floats(path: Path, lines: list[int], column: str, values: list[str]) -> np.ndarray:
    """Vectorised parse; on failure, find the first bad row so the message can name it."""
    try:
        parsed = np.array(values, dtype=np.float64)
    except ValueError:
        parsed = np.array([_number_or_nan(text) for text in values])
    bad = np.flatnonzero(~np.isfinite(parsed))
    if len(bad):
        row = bad[0]
        raise ValueError(f"{path} line {lines[row]}, column {column!r}: {values[row]!r} is not a finite number")
    return parsed


def _labels(path: Path, lines: list[int], column: str, values: list[str]) -> np.ndarray:
    parsed = np.array([_number_or_nan(text) for text in values])
    bad = np.flatnonzero(~np.isfinite(parsed) | (parsed < 0) | (parsed != np.round(parsed)))
    if len(bad):
        row = bad[0]
        raise ValueError(
            f"{path} line {lines[row]}, label column {column!r}: {values[row]!r} is not a non-negative integer"
        )
    return parsed.astype(np.int64)


def _number_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _ids(path: Path, column: str, values: list[str]) -> np.ndarray:
    """Ids as strings; duplicates would break private set intersection and row alignment."""
    ids = np.array(values, dtype=str)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path}, id column {column!r}: id {str(unique[counts > 1][0])!r} appears more than once")
    return ids


def _stratified_split(table: _Table, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): `fraction` of each class held out, rounded, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    strata = np.zeros(len(table.X), dtype=np.int64) if table.y is None else table.y
    held_out = [
        rng.permutation(rows)[: round(fraction * len(rows))]
        for rows in (np.flatnonzero(strata == value) for value in np.unique(strata))
    ]
    eval_rows = np.sort(np.concatenate(held_out))
    train_rows = np.setdiff1d(np.arange(len(strata)), eval_rows)
    if not len(train_rows):
        raise ValueError(f"eval_fraction {fraction} leaves no training rows out of {len(strata)}")
    return train_rows, eval_rows

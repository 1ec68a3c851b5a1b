"""Datasets a party holds: loading (CSV, Parquet or a SQL query), held-out splits, and federated standardisation.

Every source is read into the same column lists and checked by the same rules (label and id
columns present, finite features, non-negative integer labels, unique ids), so a table gives
the same arrays and the same error sentences whether it is a CSV, a Parquet file or a query.
SQL goes through SQLAlchemy (any URL it takes: SQLite, PostgreSQL via psycopg, ...); pyarrow
and SQLAlchemy are imported only when a dataset needs them.

Standardisation is federated: each party publishes only per-feature sums and sums of squares
(`feature_statistics`), and `combine_statistics` turns them into one global mean and scale.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# A variance below this fraction of the feature's mean square is rounding noise from
# E[x^2] - E[x]^2: the feature is treated as constant.
_CONSTANT_TOLERANCE = 1e-12

FORMATS = ("csv", "parquet", "sql")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset lives and which columns play which role.

    A file (``path``, and ``eval_path`` in the same format) or a SQL query (``url`` + ``query``,
    and ``eval_query``). ``format`` defaults to ``sql`` when ``url`` is set, else to ``parquet``
    for a ``.parquet``/``.pq`` path and ``csv`` otherwise. The database password is never in
    the URL of a config file: it comes from ``password_env`` (a variable's name) or
    ``password_file`` (a file holding it, such as a mounted Secret), and errors show the URL
    without it.
    """

    path: str | None = None  # CSV with a header row, or Parquet
    label: str | None = None  # None for feature-only (vertical host) data
    id_column: str | None = None
    eval_path: str | None = None  # held-out rows with the same columns, or ...
    eval_fraction: float = 0.2  # ... a stratified split of the training rows (0 = no held-out rows)
    seed: int = 0
    format: str | None = None  # csv | parquet | sql; inferred as above when absent
    url: str | None = None  # SQLAlchemy URL without the password: postgresql://fedsuite@db:5432/bank
    query: str | None = None  # the training rows: a SELECT (ORDER BY it: the split follows row order)
    eval_query: str | None = None  # held-out rows with the same columns (instead of eval_path)
    password_env: str | None = None  # environment variable holding the database password
    password_file: str | None = None  # file holding the database password (trailing newline dropped)
    timeout_s: float = 60.0  # SQL only: bound on connecting and on the query, where the driver allows it

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")

    @property
    def source_format(self) -> str:
        """``format``, or the one its keys imply."""
        if self.format is not None:
            return self.format
        if self.url is not None:
            return "sql"
        return "parquet" if (self.path or "").lower().endswith(_PARQUET_SUFFIXES) else "csv"


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
    """Columns of one source, split by role and checked."""

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
    """Load the training rows, and the held-out rows from `eval_path`/`eval_query` or a seeded stratified split.

    Labels are not remapped (parties must agree on label values); they must be non-negative
    integers, written as "3" or "3.0". Every feature must be a finite number.
    """
    train_rows, eval_rows = _sources(config)
    train = _table(train_rows(), config.label, config.id_column)
    if eval_rows is not None:
        held_out = _table(eval_rows(), config.label, config.id_column, train.feature_names)
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


@dataclass(frozen=True, eq=False)
class _Rows:
    """A table as read, before any checks: where it came from, its columns, and how to name a row."""

    where: str  # the file, or "query on <URL without password>"
    header: list[str]
    columns: list[list[Any]]  # one list of values per header column: str from CSV, Python values otherwise
    unit: str  # "line" (CSV, counting the header) or "row" (from 1)
    numbers: list[int]

    def at(self, row: int) -> str:
        return f"{self.where} {self.unit} {self.numbers[row]}"


def _sources(config: DatasetConfig) -> tuple[Callable[[], _Rows], Callable[[], _Rows] | None]:
    """Readers of the training rows and of the held-out rows (None when they are split off); ValueError for
    keys that do not fit the format, before anything is read."""
    kind = config.source_format
    if kind not in FORMATS:
        raise ValueError(f"format {kind!r} is not one of {', '.join(FORMATS)}")
    if kind == "sql":
        _refuse(kind, path=config.path, eval_path=config.eval_path)
        if config.url is None or config.query is None:
            raise ValueError("a sql dataset needs url and query")
        if config.password_env is not None and config.password_file is not None:
            raise ValueError("password_env and password_file are both set; give the password one way")
        url = _sql_url(config)
        train = partial(_read_query, url, "query", config.query, config.timeout_s)
        held_out = config.eval_query
        return train, None if held_out is None else partial(_read_query, url, "eval_query", held_out, config.timeout_s)
    _refuse(kind, url=config.url, query=config.query, eval_query=config.eval_query,
            password_env=config.password_env, password_file=config.password_file)
    if config.path is None:
        raise ValueError(f"a {kind} dataset needs path")
    read = _read_csv if kind == "csv" else _read_parquet
    return partial(read, Path(config.path)), None if config.eval_path is None else partial(read, Path(config.eval_path))


def _refuse(kind: str, **keys: str | None) -> None:
    given = [key for key, value in keys.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a {kind} dataset")


def _table(rows: _Rows, label: str | None, id_column: str | None, features: list[str] | None = None) -> _Table:
    """Check and convert one source's rows; `features` (from the training rows) fixes the held-out feature columns."""
    header = rows.header
    if len(set(header)) != len(header):
        raise ValueError(f"{rows.where}: header {header} repeats a column name")
    for role, column in (("label", label), ("id", id_column)):
        if column is not None and column not in header:
            raise ValueError(f"{rows.where}: {role} column {column!r} not found in header {header}")
    own_features = [column for column in header if column not in (label, id_column)]
    if features is not None and sorted(own_features) != sorted(features):
        raise ValueError(f"{rows.where}: feature columns {own_features} differ from the training rows' {features}")
    features = own_features if features is None else features
    columns = dict(zip(header, rows.columns))
    X = np.empty((len(rows.numbers), len(features)))
    for j, column in enumerate(features):
        X[:, j] = _floats(rows, column, columns[column])
    return _Table(
        feature_names=features,
        X=X,
        y=None if label is None else _labels(rows, label, columns[label]),
        ids=None if id_column is None else _ids(rows, id_column, columns[id_column]),
    )


def _read_csv(path: Path) -> _Rows:
    """Header, stripped non-blank rows, and each row's line number for error messages."""
    _require_file(path)
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
    if not body:
        raise ValueError(f"{path} has a header but no data rows")
    for line, row in zip(lines, body):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
    return _Rows(str(path), header, [list(column) for column in zip(*body)], "line", lines)


def _read_parquet(path: Path) -> _Rows:
    """Every column of a Parquet file, as Python values (nulls as None)."""
    import pyarrow
    import pyarrow.parquet

    _require_file(path)
    try:
        with pyarrow.parquet.ParquetFile(path) as parquet:
            table = parquet.read()
    except (pyarrow.ArrowException, OSError) as err:
        raise ValueError(f"{path} is not a readable Parquet file: {_one_line(err)}") from None
    return _rows(str(path), table.column_names, [column.to_pylist() for column in table.columns], table.num_rows)


def _read_query(url: Any, field: str, query: str, timeout_s: float) -> _Rows:
    """Run one query in a transaction that is rolled back (the party only reads), and keep its rows."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    where = f"{field} on {url.render_as_string(hide_password=True)}"
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_timeouts(url, timeout_s))
    except ImportError as err:
        raise ValueError(f"{where}: the database driver is not installed ({err})") from None
    except sqlalchemy.exc.SQLAlchemyError as err:  # no such dialect
        raise ValueError(f"{where} failed: {_one_line(err)}") from None
    try:
        with engine.connect() as connection:
            result = connection.execute(sqlalchemy.text(query))
            if not result.returns_rows:
                raise ValueError(f"{where} returned no result set; it must be a SELECT")
            header, body = [str(key) for key in result.keys()], result.fetchall()
    except sqlalchemy.exc.DBAPIError as err:
        raise ValueError(f"{where} failed: {_one_line(err.orig)}") from None
    except sqlalchemy.exc.SQLAlchemyError as err:
        raise ValueError(f"{where} failed: {_one_line(err)}") from None
    finally:
        engine.dispose()
    return _rows(where, header, [list(column) for column in zip(*body)] or [[] for _ in header], len(body))


def _rows(where: str, header: list[str], columns: list[list[Any]], n_rows: int) -> _Rows:
    if not header:
        raise ValueError(f"{where} has no columns")
    if not n_rows:
        raise ValueError(f"{where} has a header but no data rows")
    return _Rows(where, header, columns, "row", list(range(1, n_rows + 1)))


def _sql_url(config: DatasetConfig) -> Any:
    """The parsed URL with its password from password_env / password_file; errors never show a password."""
    import sqlalchemy

    try:
        url = sqlalchemy.engine.make_url(config.url)  # type: ignore[arg-type]
    except sqlalchemy.exc.ArgumentError:
        shown = re.sub(r":[^:@/]*@", ":***@", config.url or "")
        raise ValueError(f"url {shown!r} is not a SQLAlchemy URL (dialect[+driver]://user@host/database)") from None
    if config.password_env is not None:
        if config.password_env not in os.environ:
            raise ValueError(f"password_env names {config.password_env}, which is not set")
        url = url.set(password=os.environ[config.password_env])
    elif config.password_file is not None:
        secret = Path(config.password_file)
        if not secret.is_file():
            raise ValueError(f"password_file {secret} does not exist")
        url = url.set(password=secret.read_text().rstrip("\r\n"))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        _require_file(Path(url.database))  # SQLite would create an empty database and report a missing table
    return url


def _timeouts(url: Any, timeout_s: float) -> dict[str, Any]:
    """The driver's own bounds: SQLite waits on a lock that long; libpq connects and runs a statement that long."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": timeout_s}
    if backend == "postgresql":
        return {"connect_timeout": max(1, math.ceil(timeout_s)), "options": f"-c statement_timeout={int(timeout_s * 1000)}"}
    return {}


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")


def _one_line(err: object) -> str:
    """A driver's message (psycopg's run over lines) as one line."""
    return " ".join(str(err).split())


def _shown(value: Any) -> str:
    return "NULL" if value is None else repr(value)


def _floats(rows: _Rows, column: str, values: list[Any]) -> np.ndarray:
    """Vectorised parse; on failure, find the first bad row so the message can name it."""
    try:
        parsed = np.array(values, dtype=np.float64)
    except (ValueError, TypeError):
        parsed = np.array([_number_or_nan(value) for value in values])
    bad = np.flatnonzero(~np.isfinite(parsed))
    if len(bad):
        row = bad[0]
        raise ValueError(f"{rows.at(row)}, column {column!r}: {_shown(values[row])} is not a finite number")
    return parsed


def _labels(rows: _Rows, column: str, values: list[Any]) -> np.ndarray:
    parsed = np.array([_number_or_nan(value) for value in values])
    bad = np.flatnonzero(~np.isfinite(parsed) | (parsed < 0) | (parsed != np.round(parsed)))
    if len(bad):
        row = bad[0]
        raise ValueError(
            f"{rows.at(row)}, label column {column!r}: {_shown(values[row])} is not a non-negative integer"
        )
    return parsed.astype(np.int64)


def _number_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (ValueError, TypeError):
        return math.nan


def _ids(rows: _Rows, column: str, values: list[Any]) -> np.ndarray:
    """Ids as strings; duplicates would break private set intersection and row alignment."""
    if None in values:
        raise ValueError(f"{rows.at(values.index(None))}, id column {column!r}: NULL is not an id")
    ids = np.array([str(value) for value in values], dtype=str)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{rows.where}, id column {column!r}: id {str(unique[counts > 1][0])!r} appears more than once")
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

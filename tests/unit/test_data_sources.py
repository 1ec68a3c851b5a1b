"""fedcore.data beyond CSV: a Parquet file and a SQL query (SQLite here) give the same arrays and the same error
sentences as the CSV of the same table, and the database password never shows."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import pytest

from fedcore.data import DatasetConfig, load_dataset

from fedsuite.party.datasets import DatasetCatalog
from tests.tables import FORMATS, as_eval, write_table

HEADER = ["id", "age", "label", "income"]


def rows(n: int, seed: int = 0) -> list[list[Any]]:
    """n rows: string ids, labels 0/1/2, two features with every digit a float64 carries."""
    rng = np.random.default_rng(seed)
    return [[f"r{i}", float(rng.normal()), int(i % 3), float(rng.normal() * 1e4)] for i in range(n)]


def load(keys: dict[str, str], **config: Any) -> Any:
    return load_dataset("d", DatasetConfig(**{**keys, **config}))


def assert_same(a: Any, b: Any) -> None:
    assert a.feature_names == b.feature_names
    for field in ("X", "y", "ids", "X_eval", "y_eval", "ids_eval"):
        left, right = getattr(a, field), getattr(b, field)
        assert left is None and right is None or (left.dtype == right.dtype and np.array_equal(left, right)), field


@pytest.mark.parametrize("held_out", ["split", "eval table"])
def test_the_same_table_gives_the_same_arrays_in_every_format(tmp_path: Path, held_out: str) -> None:
    train = write_table(tmp_path, "train", HEADER, rows(60))
    held = write_table(tmp_path, "held", ["income", "label", "id", "age"],  # other column order: reordered
                       [[r[3], r[2], r[0], r[1]] for r in rows(9, seed=1)])
    loaded = {}
    for fmt in FORMATS:
        extra = {} if held_out == "split" else as_eval(held[fmt])
        loaded[fmt] = load({**train[fmt], **extra}, label="label", id_column="id", seed=3)
    assert loaded["csv"].feature_names == ["age", "income"] and len(loaded["csv"].X_eval) == (12 if held_out == "split" else 9)
    assert_same(loaded["csv"], loaded["parquet"])
    assert_same(loaded["csv"], loaded["sql"])


def test_a_vertical_host_table_without_label_keeps_its_ids_in_every_format(tmp_path: Path) -> None:
    table = write_table(tmp_path, "host", ["uid", "x1", "x2"], [["007", 1.5, 2.0], ["8", -3.0, 4.25]])
    loaded = [load(table[fmt], id_column="uid", eval_fraction=0.0) for fmt in FORMATS]
    for dataset in loaded:
        assert dataset.ids.tolist() == ["007", "8"] and dataset.y is None  # ids stay strings: leading zeros survive
        np.testing.assert_array_equal(dataset.X, [[1.5, 2.0], [-3.0, 4.25]])
    # an integer id column of a database reads as the CSV's text
    numeric = write_table(tmp_path, "numeric", ["uid", "x"], [[7, 1.0], [8, 2.0]])
    assert [load(numeric[fmt], id_column="uid", eval_fraction=0.0).ids.tolist() for fmt in FORMATS] == [["7", "8"]] * 3


def bad(column: int, value: Any) -> list[list[Any]]:
    table = rows(4)
    table[2][column] = value
    return table


# (rows, config, the message after "<where> line|row N" (or after "<where>" when row is None), the bad row, value)
CASES: dict[str, tuple[list[list[Any]], dict[str, str], str, int | None, Any]] = {
    "missing label": (rows(4), {"label": "target"},
                      ": label column 'target' not found in header ['id', 'age', 'label', 'income']", None, None),
    "missing id": (rows(4), {"id_column": "uid"},
                   ": id column 'uid' not found in header ['id', 'age', 'label', 'income']", None, None),
    "text feature": (bad(1, "x"), {}, ", column 'age': {value} is not a finite number", 2, "x"),
    "empty feature": (bad(3, None), {}, ", column 'income': {value} is not a finite number", 2, None),
    "nan feature": (bad(3, float("nan")), {}, ", column 'income': {value} is not a finite number", 2, float("nan")),
    "fractional label": (bad(2, 0.5), {}, ", label column 'label': {value} is not a non-negative integer", 2, 0.5),
    "text label": (bad(2, "yes"), {}, ", label column 'label': {value} is not a non-negative integer", 2, "yes"),
    "negative label": (bad(2, -1), {}, ", label column 'label': {value} is not a non-negative integer", 2, -1),
    "duplicate id": (bad(0, "r0"), {}, ", id column 'id': id 'r0' appears more than once", None, None),
    "no rows": ([], {}, " has a header but no data rows", None, None),
}


@pytest.mark.parametrize("case", CASES)
def test_each_format_refuses_bad_rows_with_the_csv_sentence(tmp_path: Path, case: str) -> None:
    table, config, tail, row, value = CASES[case]
    written = write_table(tmp_path, "d", HEADER, table)
    for fmt in FORMATS:
        where = written[fmt].get("path") or f"query on {written[fmt]['url']}"
        if fmt == "sql" and value != value:
            value = None  # SQLite stores a NaN as NULL
        shown = repr("" if value is None else str(value)) if fmt == "csv" else "NULL" if value is None else repr(value)
        at = "" if row is None else f" line {row + 2}" if fmt == "csv" else f" row {row + 1}"  # a CSV counts its header
        expected = where + at + tail.format(value=shown)
        with pytest.raises(ValueError) as refused:
            load(written[fmt], **{"label": "label", "id_column": "id", **config})
        assert str(refused.value) == expected, fmt


def test_a_repeated_column_name_is_refused_in_every_format(tmp_path: Path) -> None:
    written = write_table(tmp_path, "d", ["id", "x", "x", "label"], [["a", 1.0, 2.0, 0]])
    for fmt in FORMATS:
        with pytest.raises(ValueError, match=r": header \['id', 'x', 'x', 'label'\] repeats a column name$"):
            load(written[fmt], label="label", id_column="id")


def test_an_unreadable_parquet_file_and_a_missing_one_are_named(tmp_path: Path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'junk.parquet'} is not a readable Parquet file: .*magic"):
        load_dataset("d", DatasetConfig(path=str(tmp_path / "junk.parquet")))
    with pytest.raises(FileNotFoundError, match=rf"^dataset file {tmp_path / 'none.pq'} does not exist$"):
        load_dataset("d", DatasetConfig(path=str(tmp_path / "none.pq")))
    # format overrides the suffix: a CSV named .parquet is read as CSV when told so
    (tmp_path / "plain.parquet").write_text("x,label\n1,0\n")
    assert load_dataset("d", DatasetConfig(path=str(tmp_path / "plain.parquet"), format="csv", label="label",
                                           eval_fraction=0)).X.tolist() == [[1.0]]


def test_a_null_id_is_refused(tmp_path: Path) -> None:
    written = write_table(tmp_path, "d", HEADER, bad(0, None))
    with pytest.raises(ValueError, match=r"row 3, id column 'id': NULL is not an id$"):
        load(written["parquet"], label="label", id_column="id")


@pytest.mark.parametrize(("config", "message"), [
    ({"url": "not a url", "query": "SELECT 1"},
     r"^url 'not a url' is not a SQLAlchemy URL \(dialect\[\+driver\]://user@host/database\)$"),
    ({"url": "nosuchdb://h/x", "query": "SELECT 1"}, r"^query on nosuchdb://h/x failed: Can't load plugin"),
    ({"url": "sqlite:///{dir}/absent.db", "query": "SELECT 1"}, r"^dataset file {dir}/absent.db does not exist$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT * FROM nope"},
     r"^query on sqlite:///{dir}/tables.db failed: no such table: nope$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "DELETE FROM d"},
     r"^query on sqlite:///{dir}/tables.db returned no result set; it must be a SELECT$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT 1", "eval_query": "SELECT x FROM d"},
     r"^eval_query on sqlite:///{dir}/tables.db failed: no such column: x$"),
    ({"url": "sqlite:///{dir}/tables.db"}, r"^a sql dataset needs url and query$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT 1", "eval_path": "e.csv"},
     r"^eval_path does not apply to a sql dataset$"),
    ({"path": "{dir}/d.csv", "query": "SELECT 1", "password_env": "X"},
     r"^query, password_env do not apply to a csv dataset$"),
    ({"path": "{dir}/d.csv", "format": "excel"}, r"^format 'excel' is not one of csv, parquet, sql$"),
    ({"format": "parquet"}, r"^a parquet dataset needs path$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT 1", "password_env": "FEDCORE_TEST_UNSET_PASSWORD"},
     r"^password_env names FEDCORE_TEST_UNSET_PASSWORD, which is not set$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT 1", "password_file": "{dir}/none"},
     r"^password_file {dir}/none does not exist$"),
    ({"url": "sqlite:///{dir}/tables.db", "query": "SELECT 1", "password_file": "{dir}/p", "password_env": "P"},
     r"^password_env and password_file are both set; give the password one way$"),
])
def test_sql_setups_that_cannot_work_are_refused_with_a_sentence(tmp_path: Path, config: dict[str, str],
                                                                  message: str) -> None:
    write_table(tmp_path, "d", HEADER, rows(4))
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace("{dir}", str(tmp_path))):
        load_dataset("d", DatasetConfig(**{key: value.replace("{dir}", str(tmp_path)) for key, value in config.items()}))


def test_a_query_that_writes_is_refused_and_rolled_back(tmp_path: Path) -> None:
    written = write_table(tmp_path, "d", HEADER, rows(4))["sql"]
    with pytest.raises(ValueError, match="returned no result set; it must be a SELECT"):
        load_dataset("d", DatasetConfig(url=written["url"], query="DELETE FROM d"))
    assert len(load(written, label="label", id_column="id", eval_fraction=0).X) == 4


def test_a_sql_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"^timeout_s must be positive, got 0$"):
        DatasetConfig(url="sqlite://", query="SELECT 1", timeout_s=0)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("source", ["password_file", "password_env"])
def test_a_postgres_password_from_a_file_or_variable_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 source: str) -> None:
    """Real psycopg against a port nobody listens on: the error names the URL with the password masked."""
    secret = "s3cret-Pa55"
    (tmp_path / "db-password").write_text(secret + "\n")
    monkeypatch.setenv("BANK_DB_PASSWORD", secret)
    where = {"password_file": "db-password", "password_env": "BANK_DB_PASSWORD"}[source]
    port = closed_port()
    config = DatasetConfig(url=f"postgresql+psycopg://fedsuite@127.0.0.1:{port}/bank", query="SELECT 1", timeout_s=5,
                           **{source: where})
    with pytest.raises(ValueError) as refused:
        DatasetCatalog({"loans": config}, tmp_path)
    text = str(refused.value)
    assert text.startswith(f"dataset 'loans': query on postgresql+psycopg://fedsuite:***@127.0.0.1:{port}/bank failed: ")
    assert "refused" in text and secret not in text and "\n" not in text


def test_an_unparsable_url_with_a_password_masks_it() -> None:
    with pytest.raises(ValueError, match=r"^url 'postgres ql://u:\*\*\*@h/db' is not a SQLAlchemy URL") as refused:
        load_dataset("d", DatasetConfig(url="postgres ql://u:hunter2@h/db", query="SELECT 1"))
    assert "hunter2" not in str(refused.value)


def test_relative_paths_and_sqlite_databases_are_found_beside_the_config(tmp_path: Path) -> None:
    written = write_table(tmp_path / "data", "d", HEADER, rows(10))
    query = written["sql"]["query"]
    catalog = DatasetCatalog({
        "sql": DatasetConfig(url="sqlite:///data/tables.db", query=query, label="label", id_column="id"),
        "parquet": DatasetConfig(path="data/d.parquet", label="label", id_column="id"),
    }, tmp_path)
    assert_same(catalog.get("sql"), catalog.get("parquet"))
    assert [d.n_rows for d in catalog.describe()] == [7, 7]  # 3 of 10 held out: 1 per class


def test_parquet_columns_of_any_numeric_type_read_as_float64(tmp_path: Path) -> None:
    table = pyarrow.table({"a": pyarrow.array([1, 2], pyarrow.int8()), "b": pyarrow.array([0.5, 1.5], pyarrow.float32()),
                           "label": pyarrow.array([0, 1], pyarrow.uint8())})
    pyarrow.parquet.write_table(table, tmp_path / "t.parquet")
    dataset = load_dataset("t", DatasetConfig(path=str(tmp_path / "t.parquet"), label="label", eval_fraction=0))
    assert dataset.X.dtype == np.float64 and dataset.X.tolist() == [[1.0, 0.5], [2.0, 1.5]] and dataset.y.tolist() == [0, 1]

"""One table written as CSV, as Parquet and as a SQLite table, for tests that read all three the same way."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.parquet

FORMATS = ("csv", "parquet", "sql")


def write_table(directory: Path, name: str, header: list[str], rows: list[list[Any]]) -> dict[str, dict[str, str]]:
    """``rows`` (Python values; None is an empty CSV field and a NULL elsewhere) in each format: format -> the
    dataset keys that read it. The SQLite tables of a directory share ``tables.db``."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if value is None else value for value in row] for row in rows])
    columns = [[row[j] for row in rows] for j in range(len(header))]
    pyarrow.parquet.write_table(pyarrow.Table.from_arrays([_arrow(column) for column in columns], names=header),
                                directory / f"{name}.parquet")
    table = name.replace("-", "_")
    with sqlite3.connect(directory / "tables.db") as db:  # no column types: each value keeps its own
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} ({', '.join(f'c{j}' for j in range(len(header)))})")
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(header))})", rows)
    select = ", ".join(f'c{j} AS "{column}"' for j, column in enumerate(header))
    return {"csv": {"path": str(directory / f"{name}.csv")},
            "parquet": {"path": str(directory / f"{name}.parquet")},
            "sql": {"url": f"sqlite:///{directory / 'tables.db'}", "query": f"SELECT {select} FROM {table} ORDER BY rowid"}}


def as_eval(keys: dict[str, str]) -> dict[str, str]:
    """The keys that read a table as a dataset's held-out rows."""
    return {{"path": "eval_path", "query": "eval_query"}[key]: value for key, value in keys.items() if key != "url"}


def read_csv_values(path: Path, label: str | None = None, id_column: str | None = None) -> tuple[list[str], list[list[Any]]]:
    """A CSV's header and rows as a database or Parquet file would hold them: numbers (the label an int), ids text."""
    with open(path, newline="") as handle:
        header, *body = list(csv.reader(handle))
    kinds = [str if column == id_column else (lambda v: int(float(v))) if column == label else float for column in header]
    return header, [[kind(value) for kind, value in zip(kinds, row)] for row in body]


def _arrow(values: list[Any]) -> pyarrow.Array:
    """The column as Arrow infers it; one that mixes types (a bad value among numbers) as strings."""
    try:
        return pyarrow.array(values)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return pyarrow.array([None if value is None else str(value) for value in values])

"""The party's datasets, loaded once at start-up so a bad path, URL or query fails before serving."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from fedcore.data import Dataset, DatasetConfig, load_dataset
from fedcore.proto import common_pb2

_RELATIVE_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/|:memory:)(.+)$")
"""A SQLite URL with a relative database path (three slashes; four start an absolute one)."""


def _resolve(config: DatasetConfig, base_dir: Path) -> DatasetConfig:
    """Relative paths (files, the password file, a SQLite database in the URL) from the config file's directory."""
    def under(path: str | None) -> str | None:
        return str(base_dir / path) if path else None

    return dataclasses.replace(config, path=under(config.path), eval_path=under(config.eval_path),
                               password_file=under(config.password_file), url=_sqlite_under(config.url, base_dir))


def _sqlite_under(url: str | None, base_dir: Path) -> str | None:
    """``sqlite:///data/x.db`` names data/x.db beside the config, as a path would; other URLs are left as written."""
    relative = None if url is None else _RELATIVE_SQLITE.match(url)
    return url if relative is None else relative[1] + str(base_dir / relative[2])


class DatasetCatalog:
    """Name -> loaded dataset; only counts and shapes ever leave the party."""

    def __init__(self, configs: dict[str, DatasetConfig], base_dir: Path) -> None:
        self._datasets = {name: _load(name, _resolve(cfg, base_dir)) for name, cfg in configs.items()}

    def get(self, name: str) -> Dataset:
        """The dataset; KeyError when the party does not hold it."""
        return self._datasets[name]

    def describe(self) -> list[common_pb2.DatasetInfo]:
        return [
            common_pb2.DatasetInfo(
                name=name, n_rows=len(d.X), n_eval_rows=len(d.X_eval), n_features=d.X.shape[1],
                has_label=d.y is not None,
            )
            for name, d in sorted(self._datasets.items())
        ]


def _load(name: str, config: DatasetConfig) -> Dataset:
    """The dataset, or a ValueError whose one sentence starts with the dataset's name (the party's start prints it)."""
    try:
        return load_dataset(name, config)
    except (ValueError, OSError) as err:
        raise ValueError(f"dataset {name!r}: {err}") from None

"""The party's datasets, loaded once at start-up so a bad path fails before serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedcore.data import Dataset, DatasetConfig, load_dataset
from fedcore.proto import common_pb2


def _resolve(config: DatasetConfig, base_dir: Path) -> DatasetConfig:
    eval_path = str(base_dir / config.eval_path) if config.eval_path else None
    return dataclasses.replace(config, path=str(base_dir / config.path), eval_path=eval_path)


class DatasetCatalog:
    """Name -> loaded dataset; only counts and shapes ever leave the party."""

    def __init__(self, configs: dict[str, DatasetConfig], base_dir: Path) -> None:
        self._datasets = {name: load_dataset(name, _resolve(cfg, base_dir)) for name, cfg in configs.items()}

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

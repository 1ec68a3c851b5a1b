"""Trained split models, saved on the party that owns their half: ``DIR/<model_id>/v<version>.json``."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelStore:
    """Versioned JSON documents; each save makes the next version, never overwrites one."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._lock = threading.Lock()

    def _model_dir(self, model_id: str) -> Path:
        if not _MODEL_ID.match(model_id):
            raise ValueError(f"model_id {model_id!r} must be letters, digits, '.', '_' or '-'")
        return self._dir / model_id

    def versions(self, model_id: str) -> list[int]:
        directory = self._model_dir(model_id)
        return sorted(int(p.stem[1:]) for p in directory.glob("v*.json")) if directory.exists() else []

    def save(self, model_id: str, document: dict[str, Any]) -> int:
        with self._lock:
            directory = self._model_dir(model_id)
            directory.mkdir(parents=True, exist_ok=True)
            version = (self.versions(model_id) or [0])[-1] + 1
            temp = directory / f".v{version}.tmp"
            temp.write_text(json.dumps(document))
            os.replace(temp, directory / f"v{version}.json")
            return version

    def load(self, model_id: str, version: int = 0) -> tuple[int, dict[str, Any]]:
        """(version, document); version 0 means the latest. KeyError when absent."""
        versions = self.versions(model_id)
        if not versions or (version and version not in versions):
            raise KeyError(f"no model {model_id!r}" + (f" version {version}" if version else "") + " on this party")
        chosen = version or versions[-1]
        return chosen, json.loads((self._model_dir(model_id) / f"v{chosen}.json").read_text())

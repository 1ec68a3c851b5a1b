"""Trained split models, saved on the party that owns their half: ``DIR/<model_id>/v<version>.json``.

A version is a name the training job chose (``"20260205"``) or, when it chose none, the
number of the save (the third model saved under an id is ``"3"``). Each document records
its place in the save order, so "latest" is the one saved last whatever the names.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from fedsuite.model_versions import LATEST, check_version

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelNotFound(KeyError):
    """This party has no model of that id, or not that version of it (the message lists what it has)."""


class ModelExists(ValueError):
    """A training job named a version this party already saved; versions are never overwritten."""


class ModelStore:
    """Versioned JSON documents of one party (``owner``); a save never overwrites a version."""

    def __init__(self, directory: Path, owner: str) -> None:
        self._dir = directory
        self._owner = owner
        self._lock = threading.Lock()

    def _model_dir(self, model_id: str) -> Path:
        if not _MODEL_ID.match(model_id):
            raise ValueError(f"model_id {model_id!r} must be letters, digits, '.', '_' or '-'")
        return self._dir / model_id

    def _saved(self, model_id: str) -> list[tuple[int, str]]:
        """(place in the save order, version) of every save under ``model_id``, oldest first."""
        directory = self._model_dir(model_id)
        saved = []
        for path in directory.glob("v*.json") if directory.exists() else ():
            version = path.stem[1:]
            sequence = json.loads(path.read_text()).get("sequence", int(version) if version.isdigit() else 0)
            saved.append((int(sequence), version))
        return sorted(saved)

    def versions(self, model_id: str) -> list[str]:
        """The versions saved under ``model_id``, oldest first."""
        return [version for _, version in self._saved(model_id)]

    def check_new(self, model_id: str, version: str) -> None:
        """Refuse, before any work, a named version this party already holds."""
        if version:
            check_version(version)
            if version in self.versions(model_id):
                raise ModelExists(f"party {self._owner} already has model {model_id!r} version {version!r}; "
                                  "versions are never overwritten, name a new one")

    def save(self, model_id: str, document: dict[str, Any], version: str = "") -> str:
        """Save ``document`` as ``version`` (unset: the number of this save); returns the version."""
        with self._lock:
            self.check_new(model_id, version)
            directory = self._model_dir(model_id)
            directory.mkdir(parents=True, exist_ok=True)
            saved = self._saved(model_id)
            existing = {v for _, v in saved}
            sequence = (saved[-1][0] if saved else 0) + 1
            if not version:
                version = str(sequence)
                while version in existing:
                    version = str(int(version) + 1)
            temp = directory / f".v{version}.tmp"
            temp.write_text(json.dumps({**document, "version": version, "sequence": sequence}))
            os.replace(temp, directory / f"v{version}.json")
            return version

    def load(self, model_id: str, version: str = "") -> tuple[str, dict[str, Any]]:
        """(version, document); an empty version or "latest" is the newest. ModelNotFound names what exists."""
        versions = self.versions(model_id)
        wanted = "" if version == LATEST else version
        if not versions:
            raise ModelNotFound(f"party {self._owner} has no model {model_id!r} (a model id is the training job's "
                                "id unless the job set model_id)")
        if wanted and wanted not in versions:
            raise ModelNotFound(f"party {self._owner} has no model {model_id!r} version {wanted!r}; "
                                f"versions: {', '.join(versions)}")
        chosen = wanted or versions[-1]
        return chosen, json.loads((self._model_dir(model_id) / f"v{chosen}.json").read_text())

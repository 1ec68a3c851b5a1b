"""Model versions: a name the user chose (FATE's ``model_version``, e.g. "20260205") or the
number a party gave a save (1, 2, ...). One rule for the coordinator, which refuses a bad
version at submit, and the party, whose file names they become."""

from __future__ import annotations

import re

LATEST = "latest"
"""Asks for the newest version of a model (as does an empty version)."""
MAX_LENGTH = 64
_VERSION = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}$")


def check_version(version: str) -> None:
    """ValueError saying why ``version`` cannot name a saved model (it becomes part of a file name)."""
    if version == LATEST:
        raise ValueError(f"{LATEST!r} names the newest version; choose another name")
    if not _VERSION.match(version):
        raise ValueError(f"must be 1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', starting with a letter or "
                         f"digit (got {version!r})")

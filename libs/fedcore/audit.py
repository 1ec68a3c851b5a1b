"""An append-only, hash-chained audit log (DESIGN.md, "Security").

Each record is one JSON line carrying the SHA-256 of the previous record's line, h_i =
SHA-256(canonical JSON of record i, which includes h_{i-1}), with h_0 over a fixed genesis
value. Editing, deleting, inserting or reordering any line breaks every hash after it, so
:func:`verify` finds the first record that no longer fits. Records are fsynced: an
acknowledged registration, submission, round or decryption is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

GENESIS = "0" * 64


class AuditError(ValueError):
    """The log's chain is broken; the message names the first bad line."""


def _digest(record: dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify(path: str | Path) -> tuple[int, str]:
    """(number of records, last hash) of a whole, unbroken chain; AuditError otherwise."""
    previous, count = GENESIS, 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                claimed = record.pop("hash")
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise AuditError(f"{path}:{number}: not an audit record ({err})") from None
            if record.get("prev") != previous or record.get("seq") != count + 1 or _digest(record) != claimed:
                raise AuditError(f"{path}:{number}: the chain is broken here (edited, removed or reordered)")
            previous, count = claimed, count + 1
    return count, previous


class AuditLog:
    """Appends records to ``path``, continuing the chain already there (verified at open)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._count, self._last = verify(self.path) if self.path.exists() else (0, GENESIS)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``event`` and JSON-able ``fields``) and return it with its hash."""
        with self._lock:
            record = {"seq": self._count + 1, "time": round(time.time(), 6), "event": event, **fields,
                      "prev": self._last}
            record["hash"] = _digest(record)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._count, self._last = record["seq"], record["hash"]
            return record


def refusals_to(log: AuditLog) -> Callable[[str, str, str], None]:
    """An AuthInterceptor ``on_refusal`` hook that records each refused call (a policy decision)."""

    def record(caller: str, method: str, reason: str) -> None:
        log.record("call_refused", caller=caller, method=method, reason=reason)

    return record

"""Named crash points, for the crash-safety tests: the process dies there as under SIGKILL.

A test starts a service with ``FEDCORE_CRASH_AT=NAME:N`` (say ``round_committed:3``) to
kill it at the one instant a kill from outside cannot hit reliably, such as between a
round's SQLite commit and its audit record. Unset, as everywhere outside those tests, a
crash point costs a string comparison.
"""

from __future__ import annotations

import os

_CRASH_AT = os.environ.get("FEDCORE_CRASH_AT", "")


def crash_point(name: str, count: int) -> None:
    """Die here, without cleanup or flushing, if the environment asked for ``name:count``."""
    if _CRASH_AT and _CRASH_AT == f"{name}:{count}":
        os._exit(137)

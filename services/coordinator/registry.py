"""Which parties exist, what they hold, and whether they are alive.

Liveness is an application-level heartbeat (DESIGN.md): gRPC keepalive only proves a
TCP path, not that the party's process can still train. A party silent for
``party_timeout_s`` is offline and is not sampled into rounds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fedcore import telemetry
from fedcore.audit import AuditLog
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.coordinator.store import SqliteStore


class UnknownParty(KeyError):
    """A heartbeat from a party that never registered (or registered before a reset)."""


class AddressTaken(ValueError):
    """The address is another live node's (ALREADY_EXISTS): the coordinator would call that node instead."""


class PartyRegistry:
    """Registered parties, persisted so a restarted coordinator still knows their addresses."""

    def __init__(self, store: SqliteStore, party_timeout_s: float, audit: AuditLog,
                 on_register: Callable[..., None] = lambda *addresses: None,
                 reserved: dict[str, str] | None = None) -> None:
        """``on_register(*addresses)`` is told a party's old and new address when it (re-)registers;
        ``reserved`` maps addresses no party may register to the node id that holds them (the arbiter's)."""
        self._store = store
        self._reserved_ids = dict(reserved or {})
        self._on_register = on_register
        self._audit = audit
        self._timeout = party_timeout_s
        self._lock = threading.Lock()
        self._parties = {p.party_id: p for p in store.load_parties()}
        self._last_seen: dict[str, float] = {}
        self._reported: dict[str, bool] = {}
        self._listeners: list[Callable[[str, bool], None]] = []
        for party_id in self._parties:
            telemetry.PARTICIPANT_STATUS.labels(participant_id=party_id).set(0)

    def register(self, party: pb.PartyInfo) -> None:
        """Record a (re-)registration; AddressTaken when another live node holds its address."""
        with self._lock:
            holder = self._reserved_ids.get(party.address) or next(
                (p for p, r in self._parties.items()
                 if p != party.party_id and r.address == party.address and self.is_online(p)), None)
            if holder is not None:
                raise AddressTaken(f"address {party.address} is held by {holder}; a party registers its own address")
            previous = self._parties.get(party.party_id)
            record = pb.PartyInfo()
            record.CopyFrom(party)
            record.last_seen.GetCurrentTime()
            self._parties[party.party_id] = record
            self._last_seen[party.party_id] = time.monotonic()
            self._store.save_party(record)
        # A registration means a (re)started process: never reuse a channel to the old one.
        self._on_register(*{party.address, *([previous.address] if previous else [])})
        self._reported[party.party_id] = True
        for listener in self._listeners:
            listener(party.party_id, True)
        self._audit.record("party_registered", party_id=party.party_id, address=party.address,
                           datasets=[d.name for d in party.datasets])
        telemetry.PARTICIPANT_STATUS.labels(participant_id=party.party_id).set(1)

    def heartbeat(self, party_id: str) -> None:
        with self._lock:
            if party_id not in self._parties:
                raise UnknownParty(party_id)
            self._last_seen[party_id] = time.monotonic()
            self._parties[party_id].last_seen.GetCurrentTime()
        telemetry.PARTICIPANT_STATUS.labels(participant_id=party_id).set(1)

    def wait_until_heard_from_all(self, stop: threading.Event) -> bool:
        """After a restart, wait until every known party has been heard from, for party_timeout_s at most
        (a party silent that long is offline by definition); True when all were heard from."""
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline and not stop.is_set():
            if all(self.is_online(p) for p in list(self._parties)):
                return True
            stop.wait(0.1)
        return False

    def party_at(self, address: str) -> str | None:
        """The node registered at ``address`` (a party, or a reserved node's id), the one a channel there must reach."""
        if address in self._reserved_ids:
            return self._reserved_ids[address]
        with self._lock:
            return next((p for p, r in self._parties.items() if r.address == address), None)

    def is_online(self, party_id: str) -> bool:
        seen = self._last_seen.get(party_id)
        return seen is not None and time.monotonic() - seen <= self._timeout

    def parties(self) -> list[pb.PartyInfo]:
        """Every registered party with its current online flag, sorted by id."""
        with self._lock:
            records = [self._snapshot(p) for p in sorted(self._parties)]
        return records

    def _snapshot(self, party_id: str) -> pb.PartyInfo:
        record = pb.PartyInfo()
        record.CopyFrom(self._parties[party_id])
        record.online = self.is_online(party_id)
        return record

    def online_holding(self, dataset: str) -> list[pb.PartyInfo]:
        """Online parties that hold ``dataset``, sorted by id."""
        return [p for p in self.parties() if p.online and any(d.name == dataset for d in p.datasets)]

    def subscribe(self, listener: Callable[[str, bool], None]) -> None:
        """``listener(party_id, online)`` is called from ``refresh_status`` when a party goes offline or
        comes back, so running rounds stop waiting for a party the moment its heartbeat lapses."""
        self._listeners.append(listener)

    def refresh_status(self) -> None:
        """Publish each party's online flag as ``federated_participant_status``; tell listeners of changes."""
        for party in self.parties():
            telemetry.PARTICIPANT_STATUS.labels(participant_id=party.party_id).set(1 if party.online else 0)
            if self._reported.get(party.party_id, party.online) != party.online:
                for listener in self._listeners:
                    listener(party.party_id, party.online)
            self._reported[party.party_id] = party.online

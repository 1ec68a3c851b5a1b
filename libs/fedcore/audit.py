"""An append-only, hash-chained, signed audit log with its head anchored outside the file
(DESIGN.md, "Security").

Each record is one JSON line with a sequence number and the SHA-256 of the previous
record, h_i = SHA-256(canonical JSON of record i, which includes h_{i-1}), with h_0 over a
fixed genesis value, so editing, deleting, inserting or reordering a line breaks the chain
there. A chain alone can be cut short or rewritten from scratch, so two more things hold:

* a service with a TLS key signs every record's hash with it (ECDSA, or RSA: a key the log
  file cannot rewrite; anyone with the node's certificate can check, and one signature
  costs far less than the fsync each record pays anyway). An edited line whose own hash was
  recomputed fails its signature at that line, and no one without the key can append;
* the head (record count and last hash) is saved in an anchor the log does not hold (the
  coordinator's SQLite store, the arbiter's ``LOG.head``), after the record is fsynced. A log shorter than its anchor,
  or whose record at the anchored count has another hash, was cut short or re-chained;
* an operator with the file and its anchor can still restore both from an earlier copy. So
  the coordinator hands its head to every party with each registration and heartbeat, and
  each party keeps what it was shown in a :class:`WitnessFile` on its own disk: a log that
  lacks a witnessed record, or holds another one at that position, fails ``verify`` with
  the party and the time it saw the head, and the party itself reports a head that went back.

A crash mid-write leaves a final line without its newline (never acknowledged: the fsync
had not returned); opening the log drops it, fsyncs, and records what was dropped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from fedcore import telemetry

GENESIS = "0" * 64

Head = tuple[int, str]
"""(number of records, last hash): what an anchor holds."""


class AuditError(ValueError):
    """The log is broken, cut short or re-chained; the message names the first bad line."""


def _digest(record: Mapping[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
"""The key kinds a node's TLS key may be (``certs init`` makes ECDSA P-256 ones)."""


def _scheme(key: PublicKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[Any, ...]:
    """The arguments after the data for this key's sign and verify: ECDSA or RSA PKCS#1 v1.5, SHA-256."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return (ec.ECDSA(hashes.SHA256()),)
    return (padding.PKCS1v15(), hashes.SHA256())


def _fingerprint(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


class Signer:
    """Signs record hashes with a node's private key (its TLS key file: ECDSA, or RSA)."""

    def __init__(self, key_path: str | Path) -> None:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise AuditError(f"{key_path}: audit records are signed with an ECDSA or RSA key, and this is neither")
        self._key = key
        self.fingerprint = _fingerprint(key.public_key())

    def sign(self, digest: str) -> str:
        return base64.b64encode(self._key.sign(digest.encode(), *_scheme(self._key))).decode()

    def public_keys(self) -> dict[str, PublicKey]:
        return {self.fingerprint: self._key.public_key()}


def certificate_keys(paths: Iterable[str | Path]) -> dict[str, PublicKey]:
    """The public keys of these PEM certificates (a node's current and earlier ones), by fingerprint."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        for cert in x509.load_pem_x509_certificates(Path(path).read_bytes()):
            key = cert.public_key()
            if isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
                keys[_fingerprint(key)] = key
    return keys


@dataclass(frozen=True)
class Anchor:
    """Where a log's head is kept apart from it; ``name`` is how messages call it."""

    name: str
    load: Callable[[], Head | None]
    save: Callable[[int, str], None]


def file_anchor(log_path: str | Path) -> Anchor:
    """The head in ``LOG.head`` (for a node without a store: the arbiter), replaced atomically and fsynced.

    Cutting the log and this file back together to an earlier consistent pair is not caught
    here; a store kept for other reasons (the coordinator's) makes that a third thing to roll back.
    """
    path = Path(f"{log_path}.head")

    def load() -> Head | None:
        try:
            head = json.loads(path.read_text())
            return int(head["count"]), str(head["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            raise AuditError(f"{path}: not an audit head ({err})") from None

    def save(count: int, last: str) -> None:
        _replace_durably(path, json.dumps({"count": count, "hash": last}))

    return Anchor(path.name, load, save)


def _replace_durably(path: Path, text: str) -> None:
    """``path`` now holds ``text``, whole or not at all, even across a crash (write, fsync, rename, fsync dir)."""
    temp = path.with_suffix(".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines with their newlines, read as they come (a log may be large); none if it is missing."""
    if path.exists():
        with open(path, "rb") as handle:
            yield from handle


@dataclass
class _Scan:
    count: int
    last: str
    whole_bytes: int  # length of the file's whole (newline-terminated) records
    torn_bytes: int  # bytes after the last newline: a final line torn by a crash


def _scan(path: Path, keys: Mapping[str, PublicKey] | None, anchor: Anchor | None,
          every_signature: bool, witnessed: Mapping[int, Sighting] | None = None) -> _Scan:
    """Check the chain, sequence numbers, signatures, anchor and ``witnessed`` heads (by record
    number); AuditError names the first bad line.

    With ``every_signature`` False (a service at start) only the last record's signature is
    checked, and the one before a break: the chain ties every other record to it.
    """
    whole = torn = count = 0
    head, where = (anchor.load(), anchor.name) if anchor else (None, "")
    previous = GENESIS
    checked: tuple[int, dict[str, Any], str] | None = None  # (line, record, hash) of the last good record

    def check_signature(number: int, record: Mapping[str, Any], digest: str) -> None:
        if keys is None:
            return
        key = keys.get(record.get("key", ""))
        if key is None:
            raise AuditError(f"{path}:{number}: the record is not signed by a key this check was given"
                             f" (key {record.get('key')!r})")
        try:
            key.verify(base64.b64decode(record.get("sig", "")), digest.encode(), *_scheme(key))
        except (InvalidSignature, ValueError):
            raise AuditError(f"{path}:{number}: the signature does not match the record (edited or forged)") from None

    for number, line in enumerate(_lines(path), start=1):
        if not line.endswith(b"\n"):
            torn = len(line)
            break
        try:
            record = json.loads(line)
            claimed = record.pop("hash")
            signature = record.pop("sig", None)
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
            raise AuditError(f"{path}:{number}: not an audit record ({err})") from None
        if record.get("prev") != previous or record.get("seq") != number:
            if checked and not every_signature:
                check_signature(*checked)  # an edit with its own hash recomputed is that line's fault
            raise AuditError(f"{path}:{number}: the chain is broken here (edited, removed or reordered)")
        if _digest(record) != claimed:
            raise AuditError(f"{path}:{number}: the record does not match its hash (edited)")
        if keys is not None and signature is None:
            raise AuditError(f"{path}:{number}: the record is not signed")
        record["sig"] = signature
        if every_signature:
            check_signature(number, record, claimed)
        checked = (number, record, claimed)
        if head and number == head[0] and claimed != head[1]:
            raise AuditError(f"{path}:{number}: this is not the record {where} anchors"
                             f" as line {number} (the log was re-chained from here or earlier)")
        seen = (witnessed or {}).get(number)
        if seen is not None and claimed != seen.hash:
            raise AuditError(f"{path}:{number}: this is not the record {seen.described()}"
                             " (the log and its anchor were rewritten or restored from an earlier copy)")
        previous, count, whole = claimed, number, whole + len(line)
    if checked and not every_signature:
        check_signature(*checked)
    if anchor is not None and head is None and count > 1:  # one record may precede its first anchor (a crash)
        raise AuditError(f"{path}:1: the log has {count} records but {where} holds no head for it"
                         " (the anchor was removed, or this log is not that store's)")
    if head and count < head[0]:
        gone = f"line {head[0]} was" if head[0] == count + 1 else f"lines {count + 1}-{head[0]} were"
        raise AuditError(f"{path}:{count + 1}: the log ends after {count} records but {where}"
                         f" anchors {head[0]}: {gone} removed")
    beyond = [seen for number, seen in (witnessed or {}).items() if number > count]
    if beyond:
        last = max(beyond, key=lambda seen: seen.records)
        raise AuditError(f"{path}:{count + 1}: the log ends after {count} records but {last.witness} saw "
                         f"{last.records} at {last.when()}: it was cut short, with its anchor, or restored from an earlier copy")
    return _Scan(count, previous, whole, torn)


def verify(path: str | Path, keys: Mapping[str, PublicKey] | None = None,
           anchor: Anchor | None = None, witnesses: Iterable[Sighting] = ()) -> Head:
    """(number of records, last hash) of a whole log; AuditError names the first bad line.

    ``keys`` (from :func:`certificate_keys`) checks every signature; ``anchor`` the head;
    ``witnesses`` (from :func:`read_witness`) that the log holds every head others were shown.
    """
    witnessed: dict[int, Sighting] = {}
    for seen in witnesses:
        if seen.records:
            witnessed.setdefault(seen.records, seen)
    scan = _scan(Path(path), keys, anchor, every_signature=True, witnessed=witnessed)
    if scan.torn_bytes:
        raise AuditError(f"{path}:{scan.count + 1}: the last line is torn ({scan.torn_bytes} bytes without a"
                         " newline, a crash mid-write); the service drops and records it when it starts")
    return scan.count, scan.last


@dataclass(frozen=True)
class Sighting:
    """A head of another node's log, as ``witness`` was shown it at ``time`` (Unix seconds)."""

    witness: str
    records: int
    hash: str
    time: float

    def when(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))

    def described(self) -> str:
        return f"{self.witness} saw as record {self.records} at {self.when()} (hash {self.hash[:16]}...)"


def read_witness(path: str | Path) -> list[Sighting]:
    """The heads a :class:`WitnessFile` kept, oldest first; AuditError if the file is not one."""
    sightings = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            sightings.append(Sighting(str(entry["witness"]), int(entry["records"]), str(entry["hash"]),
                                      float(entry["time"])))
        except (ValueError, KeyError, TypeError) as err:
            raise AuditError(f"{path}:{number}: not a witnessed audit head ({err})") from None
    return sightings


class WitnessFile:
    """The head of another node's audit log as this node was last shown it, kept on this node's disk.

    The latest head is enough: each record's hash covers every record before it, so a log
    that still holds the latest witnessed record at its position holds the whole history
    the witness saw. A head that went back (fewer records than the one seen before, or the
    same number with another hash) is reported by ``observe`` once, and the head it
    contradicts stays in the file for good, as evidence (``verify`` then fails on it).
    The file is rewritten atomically when the head changes: a few lines, whatever the log's size.
    """

    def __init__(self, path: str | Path, witness: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._witness = witness
        self._lock = threading.Lock()
        kept = read_witness(self.path) if self.path.exists() else []
        self._evidence, self._last = kept[:-1], (kept[-1] if kept else None)

    def observe(self, records: int, digest: str) -> str | None:
        """Take a head the other node sent; a sentence if it went back from the one seen before, else None."""
        with self._lock:
            last = self._last
            if last is not None and (records, digest) == (last.records, last.hash):
                return None
            problem = None
            if last is not None and records <= last.records:
                change = "has fewer records" if records < last.records else "holds another last record"
                problem = (f"the audit log now {change} ({records}, hash {digest[:16]}...) than the one "
                           f"{last.described()}: it was cut short or restored from an earlier copy")
                self._evidence.append(last)
            self._last = Sighting(self._witness, records, digest, time.time())
            _replace_durably(self.path, "".join(
                json.dumps({"witness": seen.witness, "records": seen.records, "hash": seen.hash,
                            "time": round(seen.time, 3)}) + "\n" for seen in [*self._evidence, self._last]))
            return problem


class AuditLog:
    """Appends records to ``path``, continuing the chain there once it has checked out.

    With ``signer`` every record is signed; with ``anchor`` the head is saved after every
    record and a log that disagrees with it is refused at open.
    """

    def __init__(self, path: str | Path, signer: Signer | None = None, anchor: Anchor | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._signer, self._anchor = signer, anchor
        self._lock = threading.Lock()
        keys = signer.public_keys() if signer else None
        try:
            scan = _scan(self.path, keys, anchor, every_signature=False)
        except AuditError:  # found late (at the head): name the first bad line, which every signature does
            _scan(self.path, keys, anchor, every_signature=True)
            raise
        self._count, self._last = scan.count, scan.last
        if scan.torn_bytes:
            with open(self.path, "r+b") as handle:
                handle.truncate(scan.whole_bytes)
                os.fsync(handle.fileno())
            telemetry.get_logger().warning("audit log: dropped a torn last line", extra={
                "path": str(self.path), "line": scan.count + 1, "bytes_dropped": scan.torn_bytes})
            self.record("audit_torn_line_dropped", line=scan.count + 1, bytes_dropped=scan.torn_bytes)
        elif anchor is not None and self._count and anchor.load() != (self._count, self._last):
            anchor.save(self._count, self._last)  # records fsynced before a crash stopped the anchor update

    def head(self) -> Head:
        """(records, last hash) now: what the coordinator shows the parties (empty log: (0, ""))."""
        with self._lock:
            return (self._count, self._last) if self._count else (0, "")

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (``event`` and JSON-able ``fields``) and return it with its hash."""
        with self._lock:
            record = {"seq": self._count + 1, "time": round(time.time(), 6), "event": event, **fields,
                      "prev": self._last}
            if self._signer is not None:
                record["key"] = self._signer.fingerprint
            record["hash"] = _digest(record)
            if self._signer is not None:
                record["sig"] = self._signer.sign(record["hash"])
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._count, self._last = record["seq"], record["hash"]
            if self._anchor is not None:
                self._anchor.save(self._count, self._last)
            return record


class RefusalRecorder:
    """An AuthInterceptor ``on_refusal`` hook: refused calls (policy decisions) into the audit log,
    at most ``per_window`` records per caller in each ``window_s``.

    Every record is fsynced, so a caller retrying a refused call in a loop (300 in 0.33 s
    were seen) would flood the log and the disk. Past its share a caller's refusals are
    counted per method and written as one ``calls_refused_summary`` record when the window
    ends (or at ``flush``, when the service stops): nothing refused goes unrecorded.
    """

    def __init__(self, log: AuditLog, per_window: int = 10, window_s: float = 60.0) -> None:
        self._log = log
        self._per_window = per_window
        self._window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, dict[str, int]]] = {}
        """caller -> (window end, records written, refusals counted by method)."""

    def __call__(self, caller: str, method: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            end, written, counted = self._windows.get(caller, (0.0, 0, {}))
            if now >= end:
                self._summarise(caller, counted)
                end, written, counted = now + self._window_s, 0, {}
            if written < self._per_window:
                written += 1
            else:
                if not counted:  # the first refusal past the share: its summary is due at the window's end
                    timer = threading.Timer(end - now, self._close_window, args=(caller, end))
                    timer.daemon = True
                    timer.start()
                counted[method] = counted.get(method, 0) + 1
            self._windows[caller] = (end, written, counted)
            if counted:
                return
        self._log.record("call_refused", caller=caller, method=method, reason=reason)

    def flush(self) -> None:
        """Write every pending summary (the service stops)."""
        with self._lock:
            for caller, (_, _, counted) in self._windows.items():
                self._summarise(caller, counted)
            self._windows.clear()

    def _close_window(self, caller: str, end: float) -> None:
        with self._lock:
            window = self._windows.get(caller)
            if window is not None and window[0] == end:
                self._summarise(caller, window[2])
                self._windows[caller] = (end, window[1], {})

    def _summarise(self, caller: str, counted: dict[str, int]) -> None:
        if counted:
            self._log.record("calls_refused_summary", caller=caller, window_s=self._window_s,
                             refused=dict(sorted(counted.items())), total=sum(counted.values()))

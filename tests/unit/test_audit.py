"""The audit log: records chain, reopening continues the chain, any edit, cut, re-chain or forgery is found at
its line, and a torn last line is recovered and recorded."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fedcore.audit import (
    GENESIS, Anchor, AuditError, AuditLog, RefusalRecorder, Signer, WitnessFile, file_anchor, read_witness, verify,
)
from fedcore.tls import init_pki

from fedsuite.coordinator.store import SqliteStore


def test_records_chain_and_a_reopened_log_continues_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    first = log.record("party_registered", party_id="party-a")
    second = log.record("job_submitted", job_id="j1")
    assert first["prev"] == GENESIS and second["prev"] == first["hash"] and second["seq"] == 2
    reopened = AuditLog(tmp_path / "audit.log")
    third = reopened.record("round_committed", job_id="j1", round=1, parties=["a", "b"])
    assert third["prev"] == second["hash"] and third["seq"] == 3
    assert verify(tmp_path / "audit.log") == (3, third["hash"])


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap", "garbage"])
def test_any_tampering_breaks_the_chain_at_that_line(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(4):
        log.record("sum_decrypted", job_id="j", contributors=3, values=i)
    lines = path.read_text().splitlines()
    if tamper == "edit":
        record = json.loads(lines[1])
        record["contributors"] = 1
        lines[1] = json.dumps(record, sort_keys=True)
    elif tamper == "delete":
        del lines[1]
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[1] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match=r"audit.log:2:"):
        verify(path)
    with pytest.raises(AuditError):
        AuditLog(path)  # a broken log is not silently continued


# Signed and anchored: the tampering issue 7 point 8 describes, each found at its line. ------------------------------

RECORDS = 5


@pytest.fixture(params=["store", "file"])
def signed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Signer, Anchor]]:
    """A log signed with a real ECDSA node key, headed in a real SQLite store (the coordinator's) or a
    head file (the arbiter's)."""
    files = init_pki(tmp_path / "pki", ["coordinator"])["coordinator"]
    path = tmp_path / "audit.log"
    store = SqliteStore(tmp_path / "coordinator.db")
    anchor = (Anchor("coordinator.db", store.audit_head, store.save_audit_head) if request.param == "store"
              else file_anchor(path))
    log = AuditLog(path, Signer(files.key), anchor)
    for i in range(RECORDS):
        log.record("round_committed", job_id="j", round=i + 1, parties=["a", "b"])
    yield path, Signer(files.key), anchor
    store.close()


def _hash(record: dict[str, object]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def rechain(lines: list[str], start: int) -> list[str]:
    """What a forger without the key can do: recompute every hash and link from ``start`` on."""
    previous = json.loads(lines[start - 1])["hash"] if start else GENESIS
    for i in range(start, len(lines)):
        record = json.loads(lines[i])
        record.pop("hash")
        signature = record.pop("sig", None)
        record["prev"] = previous
        previous = record["hash"] = _hash(record)
        if signature is not None:
            record["sig"] = signature
        lines[i] = json.dumps(record, sort_keys=True)
    return lines


def _refused(path: Path, signer: Signer, anchor: Anchor, line: int, why: str) -> None:
    """Both `audit verify` and a service opening the log name ``line`` and say why."""
    with pytest.raises(AuditError, match=rf"audit.log:{line}: .*{why}"):
        verify(path, signer.public_keys(), anchor)
    with pytest.raises(AuditError, match=rf"audit.log:{line}: .*{why}"):
        AuditLog(path, signer, anchor)


@pytest.mark.parametrize(("keep", "message"), [
    (RECORDS - 1, "ends after 4 records but (coordinator.db|audit.log.head) anchors 5: line 5 was removed"),
    (RECORDS - 3, "ends after 2 records but (coordinator.db|audit.log.head) anchors 5: lines 3-5 were removed"),
    (1, "lines 2-5 were removed"),
    (0, "ends after 0 records but (coordinator.db|audit.log.head) anchors 5"),
])
def test_a_log_cut_short_is_refused_naming_the_first_missing_line(
        signed: tuple[Path, Signer, Anchor], keep: int, message: str) -> None:
    path, signer, anchor = signed
    lines = path.read_text().splitlines()[:keep]
    path.write_text("".join(line + "\n" for line in lines))
    assert verify(path) == (keep, json.loads(lines[-1])["hash"] if lines else GENESIS)  # the chain alone passes
    _refused(path, signer, anchor, keep + 1, message)


def test_an_edit_rechained_to_the_end_is_found_at_the_edited_line(
        signed: tuple[Path, Signer, Anchor]) -> None:
    path, signer, anchor = signed
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["parties"] = ["a"]
    lines[1] = json.dumps(record)
    path.write_text("\n".join(rechain(lines, 1)) + "\n")
    assert verify(path)[0] == RECORDS  # well chained
    _refused(path, signer, anchor, 2, "signature does not match")


def test_an_edit_with_its_own_hash_recomputed_is_found_at_that_line_not_the_next(
        signed: tuple[Path, Signer, Anchor]) -> None:
    path, signer, anchor = signed
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record["round"] = 30
    lines[2] = json.dumps(record)
    lines[2] = rechain(lines[:3], 2)[2]
    path.write_text("\n".join(lines) + "\n")
    _refused(path, signer, anchor, 3, "signature does not match")


@pytest.mark.parametrize("forger", ["unsigned", "other key"])
def test_an_appended_well_chained_forgery_is_refused(
        signed: tuple[Path, Signer, Anchor], tmp_path: Path, forger: str) -> None:
    path, signer, anchor = signed
    last = json.loads(path.read_text().splitlines()[-1])
    forged = {"seq": RECORDS + 1, "time": last["time"], "event": "job_finished", "job_id": "j", "prev": last["hash"]}
    other = Signer(init_pki(tmp_path / "other", ["coordinator"])["coordinator"].key)
    if forger == "other key":
        forged["key"] = other.fingerprint
    forged["hash"] = _hash(forged)
    if forger == "other key":
        forged["sig"] = other.sign(forged["hash"])
    with open(path, "a") as handle:
        handle.write(json.dumps(forged) + "\n")
    why = "not signed$" if forger == "unsigned" else "not signed by a key this check was given"
    _refused(path, signer, anchor, RECORDS + 1, why)


def test_a_torn_last_line_is_dropped_at_open_and_recorded(signed: tuple[Path, Signer, Anchor]) -> None:
    path, signer, anchor = signed
    torn = b'{"event": "round_committed", "job_id": "j", "ro'
    with open(path, "ab") as handle:
        handle.write(torn)
    with pytest.raises(AuditError, match=rf"audit.log:{RECORDS + 1}: the last line is torn \({len(torn)} bytes"):
        verify(path, signer.public_keys(), anchor)
    log = AuditLog(path, signer, anchor)
    log.record("job_finished", job_id="j")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[RECORDS]["event"] == "audit_torn_line_dropped"
    assert records[RECORDS]["line"] == RECORDS + 1 and records[RECORDS]["bytes_dropped"] == len(torn)
    assert verify(path, signer.public_keys(), anchor) == (RECORDS + 2, records[-1]["hash"]) == anchor.load()


def test_a_cut_inside_a_record_is_not_taken_for_a_torn_line(signed: tuple[Path, Signer, Anchor]) -> None:
    path, signer, anchor = signed
    path.write_bytes(path.read_bytes()[:-20])  # record 5 loses its end and its newline
    _refused(path, signer, anchor, RECORDS, "line 5 was removed")


def test_records_fsynced_before_the_anchor_was_updated_are_kept(
        signed: tuple[Path, Signer, Anchor]) -> None:
    path, signer, anchor = signed
    AuditLog(path, signer).record("job_finished", job_id="j")  # a crash between the fsync and the anchor's update
    assert anchor.load()[0] == RECORDS
    AuditLog(path, signer, anchor)
    assert anchor.load() == verify(path, signer.public_keys(), anchor) and anchor.load()[0] == RECORDS + 1


def test_a_log_whose_anchor_was_removed_is_refused(signed: tuple[Path, Signer, Anchor], tmp_path: Path) -> None:
    path, signer, _ = signed
    empty = SqliteStore(tmp_path / "other.db")
    _refused(path, signer, Anchor("other.db", empty.audit_head, empty.save_audit_head), 1,
             "the log has 5 records but other.db holds no head for it")
    empty.close()


def test_a_node_with_an_rsa_tls_key_signs_with_it(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path, signer = tmp_path / "audit.log", Signer(key)
    log = AuditLog(path, signer)
    for i in range(3):
        log.record("key_created", job_id=f"j{i}", key_bits=2048)
    assert verify(path, signer.public_keys())[0] == 3
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["key_bits"] = 1024
    lines[1] = json.dumps(record)
    path.write_text("\n".join(rechain(lines, 1)) + "\n")
    with pytest.raises(AuditError, match=r"audit.log:2: the signature does not match"):
        verify(path, signer.public_keys())


def test_refusals_past_a_callers_share_are_summarised_when_its_window_ends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    recorder = RefusalRecorder(log, per_window=2, window_s=0.3)
    for method in ("/a", "/a", "/a", "/b", "/a"):
        recorder("party-x", method, "role party not in admin")
    recorder("party-y", "/a", "role party not in admin")  # another caller has its own share
    time.sleep(0.6)  # the window's end writes the summary by itself
    recorder("party-x", "/a", "again")  # a new window: recorded again
    events = [(r["event"], r["caller"], r.get("refused")) for r in map(json.loads, log.path.read_text().splitlines())]
    assert events == [
        ("call_refused", "party-x", None), ("call_refused", "party-x", None), ("call_refused", "party-y", None),
        ("calls_refused_summary", "party-x", {"/a": 2, "/b": 1}), ("call_refused", "party-x", None),
    ]
    assert verify(log.path)[0] == 5


def test_a_witness_keeps_the_latest_head_and_for_good_the_one_a_later_head_went_back_from(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    witness = WitnessFile(tmp_path / "heads.jsonl", "party-a")
    for i in range(5):
        log.record("round_committed", round=i)
        assert witness.observe(*log.head()) is None
    assert [(s.records, s.hash) for s in read_witness(witness.path)] == [log.head()]  # one line, not one per head
    assert witness.observe(*log.head()) is None
    went_back = witness.observe(3, "ab" * 32)
    assert went_back is not None and "now has fewer records (3," in went_back and "party-a saw as record 5" in went_back
    reopened = WitnessFile(witness.path, "party-a")  # a restarted party compares with what it saw last
    assert reopened.observe(3, "ab" * 32) is None
    rewritten = reopened.observe(3, "cd" * 32)
    assert rewritten is not None and "holds another last record" in rewritten
    assert [s.records for s in read_witness(witness.path)] == [5, 3, 3]  # the evidence stays


def test_verify_checks_the_log_still_holds_every_witnessed_head(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    witness = WitnessFile(tmp_path / "heads.jsonl", "party-a")
    for i in range(6):
        log.record("round_committed", round=i)
        if i == 3:
            witness.observe(*log.head())
    lines = log.path.read_text().splitlines()
    assert verify(log.path, witnesses=read_witness(witness.path)) == log.head()
    # record 3 edited and everything after it re-chained: the file agrees with itself (and could with an anchor)
    record = json.loads(lines[2])
    record["round"] = 99
    lines[2] = json.dumps(record)
    rechained = tmp_path / "rechained.log"
    forged = rechain(lines, 2)
    rechained.write_text("\n".join(forged) + "\n")
    assert verify(rechained) == (6, json.loads(forged[-1])["hash"])  # consistent on its own
    with pytest.raises(AuditError, match=r"rechained.log:4: this is not the record party-a saw as record 4 at "):
        verify(rechained, witnesses=read_witness(witness.path))
    cut = tmp_path / "cut.log"
    cut.write_text("\n".join(log.path.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(AuditError, match=r"cut.log:4: the log ends after 3 records but party-a saw 4 at "):
        verify(cut, witnesses=read_witness(witness.path))


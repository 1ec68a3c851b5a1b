"""The coordinator's state: parties, jobs, committed rounds and job events in SQLite,
model checkpoints as files.

A round is committed when its row is in ``rounds``; its weights file is written (and
fsynced, then renamed into place) before that row, so a coordinator killed at any
point resumes from a round whose weights exist, and never counts a round twice.
``SqliteStore(":memory:")`` is the in-memory store unit tests use.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2

from fedsuite.coordinator.specs import total_rounds
from fedsuite.translate import timestamp

TERMINAL_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parties (party_id TEXT PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (
    one INTEGER PRIMARY KEY CHECK (one = 1), count INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, spec BLOB NOT NULL, state INTEGER NOT NULL, reason TEXT NOT NULL,
    current_round INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, model_info BLOB,
    result BLOB);
CREATE TABLE IF NOT EXISTS rounds (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, metrics BLOB NOT NULL, PRIMARY KEY (job_id, round));
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL, sequence INTEGER NOT NULL, event BLOB NOT NULL, PRIMARY KEY (job_id, sequence));
CREATE TABLE IF NOT EXISTS unaudited_rounds (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, PRIMARY KEY (job_id, round));
"""


class JobNotFound(KeyError):
    """No job has this id."""


class SqliteStore:
    """All coordinator state behind one lock (SQLite serialises writers anyway)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # parties -----------------------------------------------------------------
    def save_party(self, party: pb.PartyInfo) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO parties VALUES (?, ?)", (party.party_id, party.SerializeToString())
            )

    def load_parties(self) -> list[pb.PartyInfo]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM parties ORDER BY party_id").fetchall()
        return [pb.PartyInfo.FromString(r[0]) for r in rows]

    # jobs --------------------------------------------------------------------
    def create_job(self, job_id: str, spec: pb.JobSpec) -> pb.Job:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, '', 0, ?, ?, NULL, NULL)",
                (job_id, spec.SerializeToString(), pb.JOB_STATE_PENDING, now, now),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> pb.Job:
        with self._lock:
            row = self._db.execute(
                "SELECT spec, state, reason, current_round, created_at, updated_at, result FROM jobs WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            rounds = self._db.execute(
                "SELECT metrics FROM rounds WHERE job_id = ? ORDER BY round", (job_id,)
            ).fetchall()
        spec, state, reason, current_round, created_at, updated_at, result = row
        job = pb.Job(
            job_id=job_id,
            spec=pb.JobSpec.FromString(spec),
            state=state,
            reason=reason,
            current_round=current_round,
            rounds=[pb.RoundMetrics.FromString(r[0]) for r in rounds],
            created_at=timestamp(created_at),
            updated_at=timestamp(updated_at),
        )
        if result is not None:  # the kind's result message, serialised
            (job.horizontal_predict_result if job.spec.HasField("horizontal_predict")
             else job.vertical_result).ParseFromString(result)
        return job

    def list_jobs(self, limit: int) -> list[pb.Job]:
        with self._lock:
            ids = self._db.execute(
                "SELECT job_id FROM jobs ORDER BY created_at DESC, job_id LIMIT ?", (limit,)
            ).fetchall()
        return [self.get_job(r[0]) for r in ids]

    def unfinished_jobs(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE state IN (?, ?) ORDER BY created_at",
                (pb.JOB_STATE_PENDING, pb.JOB_STATE_RUNNING),
            ).fetchall()
        return [r[0] for r in rows]

    def set_state(self, job_id: str, state: int, reason: str = "") -> bool:
        """Move an unfinished job to a non-final ``state`` (PENDING says why in ``reason``); True when it moved."""
        with self._lock:
            return self._set_state(job_id, state, reason)

    def reopen_job(self, job_id: str, event: pb.JobEvent) -> bool:
        """Move a FAILED job back to PENDING and store ``event``, in one transaction; True when it moved."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ? AND state = ?",
                    (pb.JOB_STATE_PENDING, "resumed", time.time(), job_id, pb.JOB_STATE_FAILED),
                )
                if cursor.rowcount == 1:
                    self._append_event(event)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cursor.rowcount == 1

    def finish_job(self, job_id: str, state: int, reason: str, event: pb.JobEvent) -> bool:
        """End an unfinished job and store its final event, in one transaction; True when it ended here."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                moved = self._set_state(job_id, state, reason)
                if moved:
                    self._append_event(event)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return moved

    def _set_state(self, job_id: str, state: int, reason: str) -> bool:
        terminal = tuple(TERMINAL_STATES)
        cursor = self._db.execute(
            f"UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ? "
            f"AND state NOT IN ({','.join('?' * len(terminal))})",
            (state, reason, time.time(), job_id, *terminal),
        )
        return cursor.rowcount == 1

    def save_result(self, job_id: str, result: vertical_pb2.VerticalResult | pb.HorizontalPredictResult) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET result = ?, updated_at = ? WHERE job_id = ?",
                (result.SerializeToString(), time.time(), job_id),
            )

    def save_model_info(self, job_id: str, info: pb.ModelInfo) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET model_info = ?, updated_at = ? WHERE job_id = ?",
                (info.SerializeToString(), time.time(), job_id),
            )

    def model_info(self, job_id: str) -> pb.ModelInfo | None:
        with self._lock:
            row = self._db.execute("SELECT model_info FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return pb.ModelInfo.FromString(row[0]) if row[0] is not None else None

    def commit_round(self, job_id: str, metrics: pb.RoundMetrics, event: pb.JobEvent) -> None:
        """Record a committed round, advance the job and store the round's event, in one transaction.

        The round is also marked unaudited until ``mark_audited``: a crash between this
        commit and the audit record leaves the mark, and the restarted coordinator writes
        the record then (see ``unaudited_rounds``), so neither watchers nor the audit log
        ever miss a committed round.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO rounds VALUES (?, ?, ?)", (job_id, metrics.round, metrics.SerializeToString())
                )
                self._db.execute(
                    "UPDATE jobs SET current_round = ?, updated_at = ? WHERE job_id = ?",
                    (metrics.round, time.time(), job_id),
                )
                self._append_event(event)
                self._db.execute("INSERT INTO unaudited_rounds VALUES (?, ?)", (job_id, metrics.round))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_audited(self, job_id: str, round_number: int) -> None:
        """The round's audit record is written (fsynced)."""
        with self._lock:
            self._db.execute("DELETE FROM unaudited_rounds WHERE job_id = ? AND round = ?", (job_id, round_number))

    def unaudited_rounds(self) -> list[tuple[str, pb.RoundMetrics]]:
        """Committed rounds whose audit record a crash prevented, oldest first: (job id, the round's metrics)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.job_id, r.metrics FROM unaudited_rounds u JOIN rounds r "
                "ON r.job_id = u.job_id AND r.round = u.round ORDER BY r.job_id, r.round"
            ).fetchall()
        return [(job_id, pb.RoundMetrics.FromString(blob)) for job_id, blob in rows]

    def set_progress(self, job_id: str, current_round: int) -> None:
        """Advance a job that commits no rounds (a vertical job's epochs), for `job list` and `job get`."""
        with self._lock:
            self._db.execute("UPDATE jobs SET current_round = ?, updated_at = ? WHERE job_id = ?",
                             (current_round, time.time(), job_id))

    # events ------------------------------------------------------------------
    def append_event(self, event: pb.JobEvent) -> pb.JobEvent:
        """Store ``event`` with the job's next sequence number and return it."""
        with self._lock:
            return self._append_event(event)

    def _append_event(self, event: pb.JobEvent) -> pb.JobEvent:
        (last,) = self._db.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM events WHERE job_id = ?", (event.job_id,)
        ).fetchone()
        stored = pb.JobEvent()
        stored.CopyFrom(event)
        stored.sequence = last + 1
        if not stored.HasField("time"):
            stored.time.GetCurrentTime()
        if not stored.total_rounds:  # every event says it, the final ones too
            (spec,) = self._db.execute("SELECT spec FROM jobs WHERE job_id = ?", (event.job_id,)).fetchone()
            stored.total_rounds = total_rounds(pb.JobSpec.FromString(spec))
        self._db.execute(
            "INSERT INTO events VALUES (?, ?, ?)", (event.job_id, stored.sequence, stored.SerializeToString())
        )
        return stored

    def events_after(self, job_id: str, sequence: int) -> list[pb.JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, sequence)
            ).fetchall()
        return [pb.JobEvent.FromString(r[0]) for r in rows]

    # audit log head ------------------------------------------------------------
    def audit_head(self) -> tuple[int, str] | None:
        """(records, last hash) of ``audit.log`` as last written: the anchor a cut or re-chained log fails."""
        with self._lock:
            row = self._db.execute("SELECT count, hash FROM audit_head").fetchone()
        return (row[0], row[1]) if row else None

    def save_audit_head(self, count: int, last: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?)", (count, last))


class CheckpointStore:
    """Global weights per committed round: ``DIR/<job_id>/round-<r>.npz``."""

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)

    def path(self, job_id: str, round_number: int) -> Path:
        return self._dir / job_id / f"round-{round_number:06d}.npz"

    def save(self, job_id: str, round_number: int, weights: Sequence[np.ndarray]) -> Path:
        """Write atomically: a temp file, fsync, rename."""
        target = self.path(job_id, round_number)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_suffix(".tmp")
        with open(temp, "wb") as handle:
            np.savez(handle, *weights)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
        return target

    def load(self, job_id: str, round_number: int) -> list[np.ndarray]:
        with np.load(self.path(job_id, round_number)) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]

    def load_latest(self, job_id: str, committed_round: Callable[[], int]) -> tuple[int, list[np.ndarray]]:
        """The newest committed round and its weights, consistent while rounds commit and prune.

        A commit saves round r+1 before it records it and prunes round r, so a reader that
        finds round r gone reads the committed round again and finds r+1. Once the file is
        open, pruning cannot take it away (an unlinked file stays readable to its opener).
        """
        round_number = committed_round()
        while True:
            try:
                return round_number, self.load(job_id, round_number)
            except FileNotFoundError:
                newer = committed_round()
                if newer == round_number:
                    raise
                round_number = newer

    def prune(self, job_id: str, keep_round: int) -> None:
        """Drop checkpoints older than ``keep_round`` (the newest committed one is all a resume needs)."""
        for old in (self._dir / job_id).glob("round-*.npz"):
            if int(old.stem.split("-")[1]) < keep_round:
                old.unlink(missing_ok=True)

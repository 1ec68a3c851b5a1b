"""Jobs: submission, state, events, cancellation, and resumption after a restart.

One thread per running job. Events are stored before they are published, so a
WatchJob that starts late (or after a restart) replays the job's whole history.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from fedcore import telemetry
from fedcore.audit import AuditLog
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.coordinator import specs
from fedsuite.coordinator.admission import check_model_source, check_runnable
from fedsuite.coordinator.horizontal import HorizontalFedAvgJob
from fedsuite.coordinator.horizontal_predict import HorizontalPredictJob, summary
from fedsuite.coordinator.job_context import JobCancelled, JobContext, JobFailed, audit_round
from fedsuite.coordinator.party_client import PartyClient
from fedsuite.coordinator.registry import PartyRegistry
from fedsuite.coordinator.store import TERMINAL_STATES, CheckpointStore, JobNotFound, SqliteStore
from fedsuite.coordinator.vertical import VerticalJob

log = telemetry.get_logger()

WIND_DOWN_S = 10.0  # how long ResumeJob waits for a just-failed job's thread to close its calls


class JobStateError(RuntimeError):
    """The job is in a state that does not allow the request (FAILED_PRECONDITION)."""


def _state_label(state: int) -> str:
    """A final state as federated_jobs_total's label: JOB_STATE_SUCCEEDED -> succeeded."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


class JobManager:
    """Owns every job's thread and publishes their events."""

    def __init__(
        self, store: SqliteStore, checkpoints: CheckpointStore, registry: PartyRegistry, parties: PartyClient,
        call_timeout_s: float, arbiter: tuple[str, str] | None, audit: AuditLog,
    ) -> None:
        """``arbiter`` is (node id, address) of the arbiter vertical training jobs use."""
        self._store = store
        self._checkpoints = checkpoints
        self._registry = registry
        self._parties = parties
        self._call_timeout_s = call_timeout_s
        self._arbiter = arbiter
        self._audit = audit
        self._executor = ThreadPoolExecutor(max_workers=128, thread_name_prefix="party-call")
        self._threads: dict[str, threading.Thread] = {}
        self._cancel_flags: dict[str, threading.Event] = {}
        self._contexts: dict[str, JobContext] = {}
        self._changed = threading.Condition()
        self._closing = False
        registry.subscribe(self._party_status)
        # Each final state's and round outcome's series exists from 0 on, so that Prometheus' increase()
        # counts a coordinator's first job and round too (a series born at 1 would increase by 0).
        for state in TERMINAL_STATES:
            telemetry.JOBS_TOTAL.labels(state=_state_label(state))
        for outcome in ("committed", "retried"):
            telemetry.ROUNDS_TOTAL.labels(outcome=outcome)

    # -- API ----------------------------------------------------------------------
    def submit(self, spec: pb.JobSpec) -> str:
        """Validate, store and start a job; SpecError on a bad spec, JobRefused when it cannot run."""
        normalised = specs.normalise(spec)
        check_runnable(normalised, self._registry.parties())
        if normalised.HasField("horizontal_predict"):
            try:
                source: pb.Job | None = self._store.get_job(normalised.horizontal_predict.model_job_id)
            except JobNotFound:
                source = None
            check_model_source(normalised.horizontal_predict, source)
        job_id = uuid.uuid4().hex[:12]
        self._store.create_job(job_id, normalised)
        self._audit.record("job_submitted", job_id=job_id, name=normalised.name, kind=normalised.WhichOneof("kind"))
        log.info("job_submitted", job_id=job_id, name=normalised.name)
        self._start(job_id)
        return job_id

    def get(self, job_id: str) -> pb.Job:
        return self._store.get_job(job_id)

    def list(self, limit: int) -> list[pb.Job]:
        return self._store.list_jobs(limit)

    def model_info(self, job_id: str) -> pb.ModelInfo | None:
        return self._store.model_info(job_id)

    def cancel(self, job_id: str) -> pb.Job:
        job = self._store.get_job(job_id)
        if job.state in TERMINAL_STATES:
            raise JobStateError(f"job {job_id} already ended ({pb.JobState.Name(job.state)})")
        self._finish(job_id, pb.JOB_STATE_CANCELLED, "cancelled by request", pb.JOB_EVENT_TYPE_CANCELLED)
        flag = self._cancel_flags.get(job_id)
        if flag is not None:
            flag.set()
            context = self._contexts.get(job_id)
            if context is not None:
                context.cancel_calls()
        return self._store.get_job(job_id)

    def resume(self, job_id: str) -> pb.Job:
        """Run a failed job again from its last committed round; JobStateError unless it failed."""
        job = self._store.get_job(job_id)
        if job.state != pb.JOB_STATE_FAILED:
            raise JobStateError(f"job {job_id} is {pb.JobState.Name(job.state)}; only a failed job can be resumed")
        check_runnable(job.spec, self._registry.parties())
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(WIND_DOWN_S)  # a failed job's thread may still be closing its streams
        if thread is not None and thread.is_alive():
            raise JobStateError(f"job {job_id} is still winding down; resume it in a moment")
        where = f"after round {job.current_round}" if job.spec.HasField("horizontal") else "from the start"
        event = pb.JobEvent(job_id=job_id, type=pb.JOB_EVENT_TYPE_RESUMED, round=job.current_round,
                            message=f"resumed {where} (it had failed: {job.reason})")
        if not self._store.reopen_job(job_id, event):
            raise JobStateError(f"job {job_id} changed state; it can no longer be resumed")
        with self._changed:
            self._changed.notify_all()
        self._audit.record("job_resumed", job_id=job_id, after_round=job.current_round)
        log.info("job_resumed", job_id=job_id, after_round=job.current_round)
        self._start(job_id)
        return self._store.get_job(job_id)

    def watch(self, job_id: str, still_wanted: Callable[[], bool] = lambda: True) -> Iterator[pb.JobEvent]:
        """Past events, then live ones, until the job ends (or the watcher leaves)."""
        self._store.get_job(job_id)  # raises JobNotFound
        sequence = 0
        ended = False
        while not ended:
            with self._changed:
                # state before events: a final state and its event are stored in one transaction
                ended = self._store.get_job(job_id).state in TERMINAL_STATES or self._closing or not still_wanted()
                events = self._store.events_after(job_id, sequence)
                if not events and not ended:
                    self._changed.wait(timeout=1.0)
                    continue
            for event in events:
                sequence = event.sequence
                yield event

    def resume_unfinished(self) -> list[str]:
        """Restart the threads of jobs a previous process left running (after writing the audit records
        of rounds a crash committed but did not get to record)."""
        for job_id, metrics in self._store.unaudited_rounds():
            audit_round(self._audit, self._store, job_id, metrics, recovered=True)
            log.warning("round_audit_recovered", job_id=job_id, round=metrics.round)
        resumed = self._store.unfinished_jobs()
        for job_id in resumed:
            log.info("job_resuming", job_id=job_id)
            self._start(job_id, settle=True)
        return resumed

    def close(self) -> None:
        """Stop every job thread (their state stays RUNNING, so the next start resumes them)."""
        self._closing = True
        for flag in self._cancel_flags.values():
            flag.set()
        for context in self._contexts.values():
            context.cancel_calls()
        for thread in list(self._threads.values()):
            thread.join(timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._changed:
            self._changed.notify_all()

    # -- internals ------------------------------------------------------------------
    def _party_status(self, party_id: str, online: bool) -> None:
        """Running jobs stop waiting for a party whose heartbeat lapsed (and may use it again once back)."""
        for context in list(self._contexts.values()):
            if online:
                context.party_back(party_id)
            else:
                context.party_lost(party_id, f"{party_id} went offline (no heartbeat within party_timeout_s)")

    def _emit(self, event: pb.JobEvent) -> None:
        self._store.append_event(event)
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _start(self, job_id: str, settle: bool = False) -> None:
        """Run the job on its own thread; ``settle``: first give the parties a heartbeat's time to come
        back (a restarted coordinator knows them all as offline until they do)."""
        flag = threading.Event()
        self._cancel_flags[job_id] = flag
        thread = threading.Thread(target=self._run, args=(job_id, flag, settle), name=f"job-{job_id}", daemon=True)
        self._threads[job_id] = thread
        thread.start()

    def _run(self, job_id: str, cancelled: threading.Event, settle: bool = False) -> None:
        if settle:
            self._registry.wait_until_heard_from_all(cancelled)
        with telemetry.bind(job_id=job_id):
            job = self._store.get_job(job_id)
            context = JobContext(
                job_id=job_id, store=self._store, checkpoints=self._checkpoints, registry=self._registry,
                parties=self._parties, executor=self._executor, emit=self._emit, notify=self._notify, cancelled=cancelled,
                call_timeout_s=self._call_timeout_s, log=telemetry.get_logger(job_id=job_id), arbiter=self._arbiter,
                audit=self._audit,
            )
            self._contexts[job_id] = context
            try:
                if job.spec.WhichOneof("kind") == "horizontal":
                    HorizontalFedAvgJob(context, job.spec.horizontal).run()
                    done = f"all {job.spec.horizontal.rounds} rounds committed"
                elif job.spec.HasField("horizontal_predict"):
                    scored = HorizontalPredictJob(context, job.spec.horizontal_predict).run()
                    self._store.save_result(job_id, scored)
                    done = (f"{len(scored.party_metrics)} parties scored {scored.overall.n_samples} rows with round "
                            f"{scored.model_round}: {summary(scored.overall)}")
                else:
                    result = VerticalJob(context, job.spec).run()
                    self._store.save_result(job_id, result)
                    done = (f"scored {result.n_scored} rows" if job.spec.HasField("vertical_predict") else
                            f"trained {result.epochs} epochs{' (converged)' if result.converged else ''}")
            except JobCancelled:
                if self._closing:
                    log.info("job_paused_for_shutdown")
                return
            except JobFailed as err:
                self._finish(job_id, pb.JOB_STATE_FAILED, str(err), pb.JOB_EVENT_TYPE_FAILED)
                return
            except Exception as err:  # a bug must still end the job with a reason, not kill the thread silently
                log.exception("job_crashed")
                self._finish(job_id, pb.JOB_STATE_FAILED, f"internal error: {type(err).__name__}: {err}",
                             pb.JOB_EVENT_TYPE_FAILED)
                return
            finally:
                self._contexts.pop(job_id, None)
            self._finish(job_id, pb.JOB_STATE_SUCCEEDED, "", pb.JOB_EVENT_TYPE_SUCCEEDED, done)

    def _finish(self, job_id: str, state: int, reason: str, event_type: int, done: str = "") -> None:
        """End the job; its final event says ``reason`` (why it failed or was cancelled) or ``done``."""
        event = pb.JobEvent(job_id=job_id, type=event_type, message=reason or done)
        if self._store.finish_job(job_id, state, reason, event):
            with self._changed:
                self._changed.notify_all()
            self._audit.record("job_finished", job_id=job_id, state=pb.JobState.Name(state), reason=reason)
            telemetry.JOBS_TOTAL.labels(state=_state_label(state)).inc()
            log.info("job_finished", job_id=job_id, state=pb.JobState.Name(state), reason=reason)
            self._release_key(job_id)

    def _release_key(self, job_id: str) -> None:
        """A secure job's key has nothing left to decrypt once the job ends, in whatever state: the arbiter
        forgets it (in the background, so ending a job never waits for the arbiter; a resumed job gets a
        new key)."""
        secure = self._store.get_job(job_id).spec.horizontal.secure_aggregation == pb.SECURE_AGGREGATION_PAILLIER
        if self._arbiter is not None and secure and not self._closing:
            self._executor.submit(self._parties.release_key, self._arbiter[1], job_id, self._call_timeout_s)

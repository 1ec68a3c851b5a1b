"""Following a job live in the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import CoordinatorAdmin


UNITS = {"horizontal": "round", "vertical": "epoch", "vertical_predict": "step", "horizontal_predict": "step"}
"""What the bar counts, by job kind."""


def follow_job(admin: CoordinatorAdmin, job_id: str, console: Console) -> pb.Job:
    """Show a live progress bar until the job ends (rounds with loss and AUC; a vertical job's epochs with
    loss, then the guest's train AUC and KS; a vertical predict job's steps); return the final job."""
    unit = UNITS.get(admin.get(job_id).spec.WhichOneof("kind") or "", "round")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(f"job {job_id}", total=None)
        for event in admin.watch(job_id):
            kind = pb.JobEventType.Name(event.type).removeprefix("JOB_EVENT_TYPE_").lower()
            if event.total_rounds:
                progress.update(bar, total=event.total_rounds)
            if event.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED:
                m = event.metrics
                auc = f" auc={m.eval.auc:.4f} acc={m.eval.accuracy:.4f}" if m.HasField("eval") else ""
                progress.update(bar, completed=m.round,
                                description=f"{unit} {m.round} loss={m.train_loss:.4f}{auc}")
            elif event.type == pb.JOB_EVENT_TYPE_PROGRESS:
                progress.update(bar, completed=event.round,
                                description=f"{unit} {event.round}: {event.message}" if unit == "step" else None)
                progress.console.print(event.message)
            elif event.type == pb.JOB_EVENT_TYPE_STARTED:
                progress.update(bar, completed=event.round)
            elif event.type in (pb.JOB_EVENT_TYPE_PARTY_DROPPED, pb.JOB_EVENT_TYPE_ROUND_RETRIED):
                who = f" {event.party_id}" if event.party_id else ""
                progress.console.print(f"round {event.round}: {kind}{who}: {event.message}")
            elif event.type == pb.JOB_EVENT_TYPE_WAITING:
                progress.update(bar, description=f"job {job_id} pending")
                progress.console.print(f"pending: {event.message}")
            elif event.type in (pb.JOB_EVENT_TYPE_FAILED, pb.JOB_EVENT_TYPE_CANCELLED, pb.JOB_EVENT_TYPE_SUCCEEDED,
                                pb.JOB_EVENT_TYPE_RESUMED):
                progress.console.print(f"{kind}: {event.message}")
    return admin.get(job_id)

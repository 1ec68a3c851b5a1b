"""Jobs as people read them (`job list`, `job get`) and as programs read them (`job get --json`).

Times are ISO 8601: local and to the second for people, UTC (protobuf's JSON of a Timestamp) for programs.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.translate import hetero_params, seconds, utc

KINDS = {"horizontal": "horizontal", "vertical": "vertical train", "vertical_predict": "vertical predict",
         "horizontal_predict": "horizontal predict"}


def local_time(when: Timestamp, offset: bool = True) -> str:
    """Local ISO 8601 to the second (with the UTC offset unless a table of them already shares it)."""
    local = utc(when).astimezone()
    return (local if offset else local.replace(tzinfo=None)).isoformat(timespec="seconds")


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def kind(job: pb.Job) -> str:
    return KINDS.get(job.spec.WhichOneof("kind") or "", "unknown")


def progress(job: pb.Job) -> str:
    """Rounds (horizontal) or epochs (vertical) done out of the total, or rows scored (predict jobs)."""
    which = job.spec.WhichOneof("kind")
    if which == "horizontal_predict":
        scored = job.horizontal_predict_result.overall.n_samples
        return f"{scored} rows" if job.HasField("horizontal_predict_result") else "scoring"
    if which == "horizontal":
        return f"{job.current_round}/{job.spec.horizontal.rounds}"
    if which == "vertical":
        done = job.vertical_result.epochs or job.current_round
        return f"{done}/{hetero_params(job.spec.vertical.params).max_iter} epochs"
    return f"{job.vertical_result.n_scored} rows" if job.HasField("vertical_result") else "scoring"


def latest_auc(job: pb.Job) -> float | None:
    """The vertical result's AUC (the guest's, on its labels), else the newest evaluated round's; None if never evaluated."""
    if "auc" in job.vertical_result.metrics:
        return job.vertical_result.metrics["auc"]
    if job.HasField("horizontal_predict_result"):
        return job.horizontal_predict_result.overall.auc
    evaluated = [r for r in job.rounds if r.HasField("eval")]
    return evaluated[-1].eval.auc if evaluated else None


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def jobs_table(jobs: list[pb.Job]) -> Table:
    """One line per job, newest first (as the coordinator lists them)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("job", "submitted", "kind", "state", "rounds", "auc", "name", "reason"):
        table.add_column(header, no_wrap=header in ("job", "submitted"))
    for job in jobs:
        table.add_row(job.job_id, local_time(job.created_at, offset=False), kind(job), state_name(job.state),
                      progress(job), _number(latest_auc(job)), job.spec.name, job.reason)
    return table


def job_summary(job: pb.Job) -> RenderableType:
    """Name, kind, state, reason, progress, times, then a table of rounds (horizontal), epochs (vertical) or
    parties (horizontal predict)."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    result = job.vertical_result
    rows = [("job", job.job_id), ("name", job.spec.name or "-"), ("kind", kind(job)), ("state", state_name(job.state)),
            ("reason", job.reason or "-"), ("progress", progress(job)), ("latest auc", _number(latest_auc(job))),
            ("created", local_time(job.created_at)), ("updated", local_time(job.updated_at))]
    if job.HasField("vertical_result"):
        rows += [("model", f"{result.model_id} version {result.model_version}"),
                 ("metrics", ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())) or "-")]
        if result.intersection:
            rows.append(("aligned rows", str(result.intersection)))
        if result.scores_path:
            rows.append(("scores", f"{result.scores_path} (on the guest)"))
    if job.spec.HasField("horizontal_predict"):
        spec = job.spec.horizontal_predict
        rows.append(("model", f"job {spec.model_job_id} round "
                              f"{job.horizontal_predict_result.model_round or spec.model_round or 'latest'}"))
    for name, value in rows:
        facts.add_row(name, value)
    parts: list[RenderableType] = [facts]
    if job.rounds and job.spec.HasField("horizontal"):
        parts += ["", _rounds_table(job)]
    elif job.HasField("horizontal_predict_result"):
        parts += ["", _parties_table(job.horizontal_predict_result)]
    elif result.losses:
        epochs = Table("epoch", "loss", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for epoch, loss in enumerate(result.losses, 1):
            epochs.add_row(str(epoch), f"{loss:.6f}")
        parts += ["", epochs]
    return Group(*parts)


def _parties_table(result: pb.HorizontalPredictResult) -> Table:
    table = Table("party", "rows", "loss", "accuracy", "auc", "scores written", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False)
    for party, m in [*sorted(result.party_metrics.items()), ("overall", result.overall)]:
        written = result.rows_written.get(party) if party != "overall" else None
        table.add_row(party, str(m.n_samples), _number(m.loss), _number(m.accuracy), _number(m.auc),
                      "-" if written is None else str(written))
    return table


def _rounds_table(job: pb.Job) -> Table:
    table = Table("round", "parties", "train loss", "eval loss", "accuracy", "auc", "seconds",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for r in job.rounds:
        evaluated = r.HasField("eval")
        table.add_row(str(r.round), ", ".join(r.parties), _number(r.train_loss),
                      _number(r.eval.loss if evaluated else None), _number(r.eval.accuracy if evaluated else None),
                      _number(r.eval.auc if evaluated else None), f"{seconds(r.duration):.2f}")
    return table


def job_json(job: pb.Job) -> str:
    """The Job message in protobuf's JSON mapping with proto field names, as grpcurl prints it: times are
    UTC ISO 8601 (RFC 3339, `2026-02-05T10:00:00.123Z`), durations seconds with an `s` (`1.250s`)."""
    return json.dumps(json_format.MessageToDict(job, preserving_proto_field_name=True), indent=2)

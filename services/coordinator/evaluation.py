"""A global model scored on parties' own rows: the Evaluate calls, each reply checked against what
the party declared, and the sample-weighted overall. Training jobs score every round's model on
held-out rows; horizontal predict jobs score a finished model on all rows (or the held-out ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedcore.ml.metrics import Metrics, weighted_mean
from fedcore.proto import common_pb2, coordinator_pb2 as pb, party_pb2

from fedsuite.coordinator.job_context import JobContext
from fedsuite.coordinator.party_reports import BadReport, check_evaluation, declared_dataset


@dataclass
class Scores:
    """What the parties reported: accepted metrics, refused replies and failed calls, each by party."""

    metrics: dict[str, common_pb2.EvalMetrics] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """A reply out of range (the party lied or is broken): why."""
    failed: dict[str, str] = field(default_factory=dict)
    """The call failed (timeout, error status, party lost): why."""

    def overall(self) -> common_pb2.EvalMetrics | None:
        """Sample-weighted over the accepted parties; None when none was."""
        if not self.metrics:
            return None
        mean = weighted_mean([Metrics(m.loss, m.accuracy, m.auc, m.n_samples) for m in self.metrics.values()])
        return common_pb2.EvalMetrics(loss=mean.loss, accuracy=mean.accuracy, auc=mean.auc, n_samples=mean.n_samples)


def score_on(ctx: JobContext, parties: Sequence[pb.PartyInfo], task: party_pb2.TrainTask, chunks: Sequence[bytes],
             timeout_s: float) -> Scores:
    """Every party in ``parties`` scores the model in ``chunks`` on its rows of ``task.dataset``, at once.

    A reply counts at most the rows the party declared at registration (held-out ones, or all
    with ``task.all_rows``), with metrics in range; anything else is refused, never averaged in.
    """
    replies, failures = ctx.gather({p.party_id: ctx.parties.evaluate(p.address, task, chunks, timeout_s) for p in parties})
    scores = Scores(failed=dict(failures))
    for party in parties:
        reply = replies.get(party.party_id)
        if reply is None:
            continue
        try:
            check_evaluation(reply.metrics, declared_dataset(party, task.dataset), all_rows=task.all_rows)
        except BadReport as err:
            scores.refused[party.party_id] = f"refused its Evaluate reply: {err}"
            continue
        scores.metrics[party.party_id] = reply.metrics
        if task.scores_path:
            scores.rows_written[party.party_id] = reply.rows_written
    return scores

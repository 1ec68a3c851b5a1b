"""Horizontal predict: a horizontal job's global model scores a dataset, each party on its own rows.

The coordinator reads the committed model (weights and scaling), streams it to every party
that scores, and keeps only what they report: metrics on the rows each scored, checked
against the rows it declared. Rows, scores and labels stay with the parties (a party writes
its scores to its own ``scores/`` directory when the job names ``scores_path``).
"""

from __future__ import annotations

import math
import time

from fedcore.proto import common_pb2, coordinator_pb2 as pb, party_pb2

from fedsuite.coordinator.evaluation import score_on
from fedsuite.coordinator.job_context import JobContext, JobFailed
from fedsuite.coordinator.party_client import serialise_global_chunks
from fedsuite.coordinator.party_reports import declared_dataset
from fedsuite.translate import seconds


def summary(metrics: common_pb2.EvalMetrics) -> str:
    """``auc=0.9934 accuracy=0.9561 loss=0.1187`` (AUC left out when undefined)."""
    shown = {"auc": metrics.auc, "accuracy": metrics.accuracy, "loss": metrics.loss}
    return " ".join(f"{name}={value:.4f}" for name, value in shown.items() if not math.isnan(value))


class HorizontalPredictJob:
    """Scores ``spec.dataset`` with job ``spec.model_job_id``'s model, on every chosen party at once."""

    def __init__(self, ctx: JobContext, spec: pb.HorizontalPredictSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.timeout_s = seconds(spec.timeout)

    def run(self) -> pb.HorizontalPredictResult:
        source = self.ctx.store.get_job(self.spec.model_job_id)
        model_round = self.spec.model_round or source.current_round
        info = self.ctx.store.model_info(self.spec.model_job_id)
        try:
            weights = self.ctx.checkpoints.load(self.spec.model_job_id, model_round)
        except FileNotFoundError:
            raise JobFailed(f"round {model_round} of job {self.spec.model_job_id} is no longer kept (only the latest "
                            "rounds' checkpoints are); leave model_round unset to score with the last one") from None
        parties = self.wait_for_parties()
        self.ctx.running()
        self.ctx.event(pb.JOB_EVENT_TYPE_STARTED, message=f"scoring {self.spec.dataset!r} with round {model_round} of "
                       f"job {self.spec.model_job_id} on {', '.join(p.party_id for p in parties)}")
        trained = source.spec.horizontal  # its training settings make a valid task; scoring uses none of them
        task = party_pb2.TrainTask(
            job_id=self.ctx.job_id, round=model_round, dataset=self.spec.dataset, model=info.model,
            n_features=info.n_features, n_classes=info.n_classes, local_epochs=trained.local_epochs,
            batch_size=trained.batch_size, learning_rate=trained.learning_rate, penalty=trained.penalty,
            alpha=trained.alpha, feature_mean=info.feature_mean, feature_scale=info.feature_scale,
            all_rows=self.spec.rows != pb.PREDICT_ROWS_HELD_OUT, scores_path=self.spec.scores_path,
        )
        scores = score_on(self.ctx, parties, task, serialise_global_chunks(weights), self.timeout_s)
        problems = {**scores.failed, **{p: f"INVALID_ARGUMENT: {why}" for p, why in scores.refused.items()}}
        if problems:
            raise JobFailed("; ".join(f"{party}: {why}" for party, why in sorted(problems.items())))
        overall = scores.overall()
        assert overall is not None  # every party was accepted, and there is at least one
        self.ctx.event(pb.JOB_EVENT_TYPE_PROGRESS, 1, evaluation={"auc": overall.auc, "accuracy": overall.accuracy},
                       message=f"scored {overall.n_samples} rows: {summary(overall)}")
        return pb.HorizontalPredictResult(model_round=model_round, party_metrics=scores.metrics, overall=overall,
                                          rows_written=scores.rows_written)

    def wait_for_parties(self) -> list[pb.PartyInfo]:
        """The chosen parties (named, or every registered holder of the dataset), once all are online and
        have the rows to score; PENDING while some are offline, failing after the job's timeout."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.ctx.check_cancelled()
            holders = {p.party_id: p for p in self.ctx.registry.parties()
                       if any(d.name == self.spec.dataset for d in p.datasets)}
            chosen = [holders[p] for p in self.spec.parties if p in holders] if self.spec.parties else list(holders.values())
            missing = sorted(set(self.spec.parties) - set(holders))
            if missing:
                raise JobFailed(f"part{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)} no longer "
                                f"declare{'s' if len(missing) == 1 else ''} dataset {self.spec.dataset!r}")
            if self.spec.rows == pb.PREDICT_ROWS_HELD_OUT:
                empty = [p.party_id for p in chosen if declared_dataset(p, self.spec.dataset).n_eval_rows == 0]
                if empty:
                    raise JobFailed(f"{', '.join(empty)} declare{'s' if len(empty) == 1 else ''} no held-out rows of "
                                    f"{self.spec.dataset!r}; score all rows (rows: all) or name other parties")
            offline = [p.party_id for p in chosen if not p.online]
            if chosen and not offline:
                return sorted(chosen, key=lambda p: p.party_id)
            absent = f"{', '.join(offline)} offline" if offline else f"no party holds {self.spec.dataset!r}"
            if time.monotonic() >= deadline:
                raise JobFailed(f"{absent} for timeout={self.timeout_s:g} s")
            self.ctx.waiting(f"waiting up to timeout={self.timeout_s:g} s: {absent}", pending=True)
            time.sleep(0.2)

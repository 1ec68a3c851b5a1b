"""Horizontal FedAvg, driven round by round (DESIGN.md, "Horizontal").

Each step of the protocol is one method: ``setup`` (federated feature statistics and
the initial model), ``sample_parties``, ``train_round`` (stream the global model out
and the updates in, adding them as they arrive), ``evaluate`` and ``commit``. The
arithmetic is :class:`fedcore.ml.fedavg.StreamingFedAvg`; this module only moves bytes
and decides who counts, with a deadline on every wait.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from fedcore import telemetry, tensors
from fedcore.data import combine_statistics
from fedcore.crypto.paillier import PublicKey
from fedcore.ml.fedavg import EncryptedFedAvg, EncryptedRoundResult, RoundResult, StreamingFedAvg
from fedcore.ml.models import build_model
from fedcore.proto import arbiter_pb2, common_pb2, coordinator_pb2 as pb, party_pb2
from fedcore.rpc import error_text

from fedsuite.coordinator.job_context import JobContext, JobFailed
from fedsuite.faults import crash_point
from fedsuite.coordinator.party_client import serialise_global_chunks
from fedsuite.coordinator.evaluation import score_on
from fedsuite.coordinator.party_reports import BadReport, check_description, declared_dataset
from fedsuite.translate import duration, model_config, seconds

PAILLIER_EXPONENT = -40
"""Fixed-point scale of encrypted updates: n_k * w_k to 2^-40 (~1e-12); sums stay far below n."""


def largest_magnitude(values: np.ndarray) -> float:
    """max |v| without allocating |values| (an update's chunk or a whole aggregated tensor); 0 when empty."""
    return max(float(values.max()), -float(values.min())) if values.size else 0.0


class _PlainUpdates:
    """Updates in plaintext: RAW chunks checked against the job's bounds, then added into a StreamingFedAvg.

    Each chunk is checked before it is added, so a finite but huge update (3e38) never
    reaches the sum, and a party whose update drifts further than ``max_update_norm``
    from the global model is refused as soon as its running norm passes the bound.
    """

    def __init__(self, specs: Sequence[tensors.TensorSpec], global_weights: Sequence[np.ndarray],
                 max_abs_weight: float, max_update_norm: float) -> None:
        self._specs = specs
        self._global = global_weights
        self._max_abs = max_abs_weight
        self._max_norm = max_update_norm
        self._squared_norms: dict[str, float] = {}
        self.aggregator = StreamingFedAvg(specs)

    def reader(self) -> tensors.TensorStreamReader:
        return tensors.TensorStreamReader(self._specs)

    def add(self, party_id: str, part: tensors.ChunkValues) -> int:
        values = part.values
        largest = largest_magnitude(values)
        if largest > self._max_abs:
            raise ValueError(f"a weight of magnitude {largest:.3g} exceeds max_abs_weight={self._max_abs:g}")
        if self._max_norm:
            start = part.element_offset
            base = self._global[part.tensor_index].reshape(-1)[start : start + values.size]
            squared = self._squared_norms.get(party_id, 0.0) + float(np.sum((values - base).astype(np.float64) ** 2))
            self._squared_norms[party_id] = squared
            if squared > self._max_norm**2:
                raise ValueError(f"its update's L2 norm exceeds max_update_norm={self._max_norm:g}")
        self.aggregator.add_update_chunk(party_id, part.tensor_index, part.element_offset, values)
        return int(values.nbytes)


class _EncryptedUpdates:
    """Updates under the arbiter's Paillier key: PAILLIER chunks multiplied into an EncryptedFedAvg."""

    def __init__(self, specs: Sequence[tensors.TensorSpec], key: PublicKey) -> None:
        self._key = key
        self.lengths = [int(np.prod(spec.shape, dtype=np.int64)) for spec in specs]
        self.aggregator = EncryptedFedAvg(key, self.lengths, PAILLIER_EXPONENT)

    def reader(self) -> tensors.CiphertextStreamReader:
        return tensors.CiphertextStreamReader(self._key, self.lengths)

    def add(self, party_id: str, part: tensors.CiphertextChunk) -> int:
        self.aggregator.add_update_chunk(party_id, part.tensor_index, part.element_offset, part.exponent,
                                         part.ciphertexts)
        return len(part.ciphertexts) * self._key.ciphertext_width


def capped_weights(rows: Mapping[str, int], share: float) -> dict[str, float]:
    """Each party's FedAvg weight: its rows, the largest lowered to one common level so that none
    exceeds ``share`` of the total (water-filling), but never below equal weights (1/k of k parties).

    With c parties capped at level L and the rest's rows R, L = share * (R + c L), so
    L = share * R / (1 - c share); parties are capped from the largest while they exceed it.
    """
    share = max(share, 1 / len(rows))
    rest = float(sum(rows.values()))
    for capped, party in enumerate(sorted(rows, key=rows.__getitem__, reverse=True)):
        level = share * rest / (1 - capped * share)
        if rows[party] <= level:
            break
        rest -= rows[party]
    else:  # only float rounding at share = 1/k gets here: equal weights
        level = float(min(rows.values()))
    return {party: min(float(n), level) for party, n in rows.items()}


@dataclass
class RoundOutcome:
    """What a round's training phase produced and who fell out, with why."""

    aggregator: StreamingFedAvg | EncryptedFedAvg
    dropped: dict[str, str]
    weights: dict[str, float] | None
    """Each sampled party's FedAvg weight, capped by max_party_weight; None when parties weight
    their own (encrypted) updates by their n_samples."""


class HorizontalFedAvgJob:
    """Runs one horizontal job from its last committed round to the end."""

    def __init__(self, ctx: JobContext, spec: pb.HorizontalJobSpec) -> None:
        self.ctx = ctx
        self.spec = spec
        self.round_timeout_s = seconds(spec.round_timeout)
        """The spec's round_timeout (normalise() filled in its default), in seconds."""
        self.refused: dict[str, str] = {}
        """Parties refused for the rest of the job, with why: their DescribeData reply was a lie."""

    # -- the protocol ---------------------------------------------------------
    def run(self) -> None:
        holders = self.wait_for_parties(self.spec.min_parties, {}, pending=True)
        self.ctx.running()
        info = self.setup(holders)
        committed = self.ctx.store.get_job(self.ctx.job_id).current_round
        shapes = build_model(model_config(info.model, info.n_features, info.n_classes)).shapes()
        specs = [tensors.TensorSpec(tuple(shape), np.dtype("<f4")) for shape in shapes]
        # Between rounds the serialised chunks are the only copy of the global model in memory.
        global_chunks = serialise_global_chunks(self.ctx.checkpoints.load(self.ctx.job_id, committed))
        self.ctx.event(pb.JOB_EVENT_TYPE_STARTED, committed, total_rounds=self.spec.rounds,
                       message=f"resuming after round {committed}" if committed else "started")
        for round_number in range(committed + 1, self.spec.rounds + 1):
            self.ctx.check_cancelled()
            with telemetry.bind(round=round_number):
                global_chunks = self.run_round(round_number, global_chunks, specs, info)

    def setup(self, holders: Sequence[pb.PartyInfo]) -> pb.ModelInfo:
        """Agree on features, classes and scaling with the parties, then checkpoint round 0."""
        existing = self.ctx.store.model_info(self.ctx.job_id)
        stats = self._describe(holders)  # on a resume too, so that a party refused before is refused again
        if existing is not None:
            if existing.paillier_n:  # resumed: the key was released when the job failed (or is still held)
                existing.paillier_n = self.paillier_key()
                self.ctx.store.save_model_info(self.ctx.job_id, existing)
            return existing
        widths = {s.n_features for s in stats.values()}
        if len(widths) != 1:
            detail = ", ".join(f"{p}: {s.n_features}" for p, s in sorted(stats.items()))
            raise JobFailed(f"parties disagree on the number of features of {self.spec.dataset!r} ({detail})")
        labels = sorted({int(label) for s in stats.values() for label in s.class_labels})
        n_features = widths.pop()
        info = pb.ModelInfo(model=self.spec.model, round=0, n_features=n_features,
                            n_classes=max(2, (labels[-1] + 1) if labels else 2))
        if self.spec.standardize:
            # Each party's means count with its capped FedAvg weight, so no declared row count steers the scaling.
            rows = {p: s.n_rows for p, s in stats.items()}
            weights = capped_weights(rows, self.spec.max_party_weight or 1.0)
            mean, scale = combine_statistics(
                list(weights.values()),
                [np.asarray(stats[p].feature_sum) * (weights[p] / rows[p]) for p in weights],
                [np.asarray(stats[p].feature_sum_sq) * (weights[p] / rows[p]) for p in weights],
            )
            info.feature_mean.extend(mean.tolist())
            info.feature_scale.extend(scale.tolist())
        if self.spec.secure_aggregation == pb.SECURE_AGGREGATION_PAILLIER:
            info.paillier_n = self.paillier_key()
        model = build_model(model_config(info.model, info.n_features, info.n_classes))
        weights = model.init_weights(np.random.default_rng(self.spec.seed))
        self.ctx.checkpoints.save(self.ctx.job_id, 0, weights)
        self.ctx.store.save_model_info(self.ctx.job_id, info)
        return info

    def paillier_key(self) -> bytes:
        """The job's Paillier modulus, created by the arbiter, which alone holds the private key."""
        if self.ctx.arbiter is None:
            raise JobFailed("secure aggregation needs an arbiter: set `arbiter` (host:port) in the coordinator config")
        try:
            return self.ctx.parties.create_key(self.ctx.arbiter[1], self.ctx.job_id, self.spec.key_bits,
                                               self.ctx.call_timeout_s)
        except grpc.RpcError as err:
            raise JobFailed(f"the arbiter did not create the job's key: {error_text(err)}") from err

    def run_round(
        self, round_number: int, global_chunks: list[bytes], specs: Sequence[tensors.TensorSpec], info: pb.ModelInfo,
    ) -> list[bytes]:
        """Train, retrying without the parties that failed, until the quorum is met or retries run out.

        Takes the global model as serialised chunks and returns the new one the same way.
        """
        started = time.monotonic()
        excluded = dict(self.refused)
        for attempt in range(self.spec.max_round_retries + 1):
            parties = self.sample_parties(round_number, attempt, excluded)
            outcome = self.train_round(round_number, parties, global_chunks, specs, info)
            excluded.update(outcome.dropped)
            arrived = outcome.aggregator.completed()
            tainted = outcome.aggregator.tainted_by
            overweight = self._overweight(outcome.weights, arrived)
            if len(arrived) >= self.spec.min_parties and not tainted and overweight is None:
                result = outcome.aggregator.commit()
                global_chunks.clear()  # keep memory at O(model) while the new model is evaluated and saved
                weights = (result.weights if isinstance(result, RoundResult)
                           else self.decrypt_mean(round_number, result, specs))
                new_chunks = self.commit(round_number, weights, result.parties, result.train_loss, info, started)
                telemetry.ROUNDS_TOTAL.labels(outcome="committed").inc()
                return new_chunks
            telemetry.ROUNDS_TOTAL.labels(outcome="retried").inc()
            why = (
                f"{len(arrived)} of the {self.spec.min_parties} required updates arrived (min_parties)"
                if len(arrived) < self.spec.min_parties
                else f"partial updates of {', '.join(sorted(tainted))} reached the sum" if tainted
                else str(overweight)
            )
            self.ctx.event(pb.JOB_EVENT_TYPE_ROUND_RETRIED, round_number,
                           message=f"attempt {attempt + 1}: {why}")
            self.ctx.log.warning("round_retried", attempt=attempt + 1, reason=why)
        raise JobFailed(self._failure_reason(round_number, excluded))

    def _overweight(self, weights: dict[str, float] | None, arrived: Sequence[str]) -> str | None:
        """Why the updates that arrived would give one party more than max_party_weight of their
        total weight (possible only when others were dropped), or None."""
        if weights is None or not arrived:
            return None
        share = self.spec.max_party_weight or 1.0
        heaviest = max(arrived, key=weights.__getitem__)
        got = weights[heaviest] / sum(weights[p] for p in arrived)
        if got <= max(share, 1 / len(arrived)) * (1 + 1e-9):
            return None
        return (f"without the dropped parties, {heaviest} would carry {got:.3g} of the weight, "
                f"above max_party_weight={share:g}")

    def _failure_reason(self, round_number: int, dropped: dict[str, str]) -> str:
        detail = "; ".join(f"{p}: {why}" for p, why in sorted(dropped.items())) or "no party was dropped"
        return (
            f"round {round_number} missed its quorum of min_parties={self.spec.min_parties} in "
            f"{self.spec.max_round_retries + 1} attempt(s); {detail}"
        )

    def wait_for_parties(
        self, needed: int, excluded: dict[str, str], pending: bool = False, wait: bool = True,
    ) -> list[pb.PartyInfo]:
        """At least ``needed`` online parties holding the dataset, not ``excluded``; waits for offline ones
        up to round_timeout_s (``wait``), saying what it waits for, then fails naming who is missing."""
        deadline = time.monotonic() + self.round_timeout_s
        while True:
            self.ctx.check_cancelled()
            candidates = [p for p in self.ctx.registry.parties()  # one snapshot: online and offline agree
                          if p.party_id not in excluded and any(d.name == self.spec.dataset for d in p.datasets)]
            holders = [p for p in candidates if p.online]
            if len(holders) >= needed:
                return holders
            offline = [p.party_id for p in candidates if not p.online]
            shortfall = (
                f"{len(holders)} of the min_parties={needed} parties holding dataset {self.spec.dataset!r} are online "
                f"({', '.join(p.party_id for p in holders) or 'none'})"
                + (f"; offline: {', '.join(offline)}" if offline else "")
                + "".join(f"; {p} dropped: {why}" for p, why in sorted(excluded.items()))
            )
            if not (wait and offline) or time.monotonic() >= deadline:
                raise JobFailed(shortfall)
            self.ctx.waiting(f"waiting up to round_timeout_s={self.round_timeout_s:g} s: {shortfall}", pending)
            time.sleep(0.2)

    def sample_parties(self, round_number: int, attempt: int, excluded: dict[str, str]) -> list[pb.PartyInfo]:
        """max(min_parties, ceil(fraction * online)) parties, drawn reproducibly from the job's seed.

        Only the first attempt waits for offline parties; a retry does not wait again for a party
        it knows is gone."""
        try:
            holders = self.wait_for_parties(self.spec.min_parties, excluded, wait=attempt == 0)
        except JobFailed as err:
            raise JobFailed(f"round {round_number} cannot meet its quorum: {err}") from None
        count = min(len(holders), max(self.spec.min_parties, math.ceil(self.spec.fraction * len(holders))))
        chosen = random.Random(f"{self.spec.seed}/{round_number}/{attempt}").sample(holders, count)
        chosen.sort(key=lambda p: p.party_id)
        self.ctx.event(pb.JOB_EVENT_TYPE_ROUND_STARTED, round_number, parties=[p.party_id for p in chosen],
                       total_rounds=self.spec.rounds)
        return chosen

    def train_round(
        self, round_number: int, parties: Sequence[pb.PartyInfo], global_chunks: Sequence[bytes],
        specs: Sequence[tensors.TensorSpec], info: pb.ModelInfo,
    ) -> RoundOutcome:
        """Stream the global model to each party and add each update into the accumulator as it arrives."""
        updates: _PlainUpdates | _EncryptedUpdates = (
            _EncryptedUpdates(specs, PublicKey.from_n(info.paillier_n)) if info.paillier_n
            else _PlainUpdates(specs, self._global_weights(global_chunks, specs), self.spec.max_abs_weight,
                               self.spec.max_update_norm)
        )
        aggregator = updates.aggregator
        weights = None if info.paillier_n else capped_weights(
            {p.party_id: declared_dataset(p, self.spec.dataset).n_rows for p in parties},
            self.spec.max_party_weight or 1.0)
        task = self._task(round_number, info)
        deadline = time.monotonic() + self.round_timeout_s
        futures = {
            p.party_id: self.ctx.executor.submit(self._collect_update, p, task, global_chunks, updates, deadline,
                                                 None if weights is None else weights[p.party_id])
            for p in parties
        }
        dropped: dict[str, str] = {}
        for party_id, future in futures.items():
            reason = future.result()
            if reason is not None:
                dropped[party_id] = reason
                aggregator.abandon_update(party_id)
                self.ctx.event(pb.JOB_EVENT_TYPE_PARTY_DROPPED, round_number, party_id=party_id, message=reason)
                self.ctx.log.warning("party_dropped", party_id=party_id, reason=reason)
        self.ctx.check_cancelled()
        return RoundOutcome(aggregator, dropped, weights)

    def _collect_update(
        self, party: pb.PartyInfo, task: party_pb2.TrainTask, global_chunks: Sequence[bytes],
        updates: _PlainUpdates | _EncryptedUpdates, deadline: float, weight: float | None,
    ) -> str | None:
        """One party's Train stream; returns why it was dropped, or None when its update counts.

        ``weight`` is its FedAvg weight; None: its n_samples."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"DEADLINE_EXCEEDED: round_timeout_s={self.round_timeout_s} passed before its turn"
        sent = sum(len(c) for c in global_chunks)
        received = 0
        call = self.ctx.parties.train(party.address, task, global_chunks, remaining)
        self.ctx.track(call, party.party_id)  # type: ignore[arg-type]
        reader = updates.reader()
        loss: float | None = None
        declared_rows = declared_dataset(party, self.spec.dataset).n_rows
        try:
            for response in self.ctx.parties.gate.responses(call):
                if response.HasField("summary"):
                    loss = self._accept_summary(party.party_id, response.summary, task, loss, updates.aggregator,
                                                declared_rows, weight)
                elif loss is None:
                    raise tensors.TensorStreamError("update chunks before the summary")
                else:
                    received += updates.add(party.party_id, reader.accept(response.update_chunk))  # type: ignore[arg-type]
            if loss is None:
                raise tensors.TensorStreamError("the stream ended without an update")
            reader.finish()
            updates.aggregator.finish_update(party.party_id, loss)
            return None
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                return f"DEADLINE_EXCEEDED: no whole update within round_timeout_s={self.round_timeout_s}"
            return self.ctx.lost_reason(party.party_id) or error_text(err)
        except (tensors.TensorStreamError, ValueError) as err:
            call.cancel()  # type: ignore[attr-defined]
            return f"INVALID_ARGUMENT: rejected update: {err}"
        finally:
            self.ctx.untrack(call)  # type: ignore[arg-type]
            telemetry.COMMUNICATION_BYTES.labels(direction="sent", peer=party.party_id).inc(sent)
            telemetry.COMMUNICATION_BYTES.labels(direction="received", peer=party.party_id).inc(received)

    @staticmethod
    def _accept_summary(
        party_id: str, summary: party_pb2.UpdateSummary, task: party_pb2.TrainTask,
        previous: float | None, aggregator: StreamingFedAvg | EncryptedFedAvg, declared_rows: int,
        weight: float | None,
    ) -> float:
        """The update's loss, once its summary is known to answer the task; n_samples may not exceed the
        training rows the party declared at registration (and described at setup). Its FedAvg weight is
        ``weight`` (the declared rows, capped by max_party_weight) or, if None, n_samples."""
        if previous is not None:
            raise tensors.TensorStreamError("a second summary in one update")
        if summary.job_id != task.job_id or summary.round != task.round:
            raise tensors.TensorStreamError(
                f"update answers job {summary.job_id!r} round {summary.round}, "
                f"expected job {task.job_id!r} round {task.round}"
            )
        if not math.isfinite(summary.train_loss):
            raise tensors.TensorStreamError("train_loss is not finite")
        if not 0 < summary.n_samples <= declared_rows:
            raise tensors.TensorStreamError(
                f"n_samples={summary.n_samples} is not in 1..{declared_rows}, the training rows it declared at registration")
        aggregator.begin_update(party_id, summary.n_samples if weight is None else weight)
        return float(summary.train_loss)

    def evaluate(self, round_number: int, chunks: Sequence[bytes], info: pb.ModelInfo) -> tuple[common_pb2.EvalMetrics | None, dict[str, common_pb2.EvalMetrics]]:
        """Every online holder with held-out rows scores the new global model; sample-weighted overall."""
        holders = [
            p for p in self.ctx.registry.online_holding(self.spec.dataset)
            if declared_dataset(p, self.spec.dataset).n_eval_rows > 0 and p.party_id not in self.refused
        ]
        if not holders:
            return None, {}
        scores = score_on(self.ctx, holders, self._task(round_number, info), chunks, self.round_timeout_s)
        for party_id, reason in scores.failed.items():
            self.ctx.log.warning("evaluation_failed", party_id=party_id, reason=reason)
        for party_id, why in scores.refused.items():
            self._name_bad_party(party_id, round_number, why)
        return scores.overall(), scores.metrics

    def decrypt_mean(
        self, round_number: int, result: EncryptedRoundResult, specs: Sequence[tensors.TensorSpec],
    ) -> list[np.ndarray]:
        """Secure aggregation's last step: the arbiter decrypts sum_k n_k w_k (of at least two parties),
        and the coordinator divides by sum_k n_k."""
        assert self.ctx.arbiter is not None
        header = arbiter_pb2.DecryptSumHeader(job_id=self.ctx.job_id, round=round_number,
                                              contributors=len(result.parties), lengths=[len(s) for s in result.sums])
        try:
            sums = self.ctx.parties.decrypt_sum(self.ctx.arbiter[1], header, result.sums, self.round_timeout_s)
        except grpc.RpcError as err:
            raise JobFailed(f"round {round_number}: the arbiter did not decrypt the aggregate: {error_text(err)}") from err
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, which commit refuses
            return [(flat / result.total_weight).astype(spec.dtype).reshape(spec.shape) for flat, spec in zip(sums, specs)]

    def commit(
        self, round_number: int, weights: list[np.ndarray], parties: list[str], train_loss: float,
        info: pb.ModelInfo, started: float,
    ) -> list[bytes]:
        """Evaluate if due, checkpoint the weights, then record the round: in that order, for crash safety.

        Returns the new model serialised for the next round (the same chunks the evaluation used).
        """
        self._check_aggregate(round_number, weights)
        chunks = serialise_global_chunks(weights)
        metrics = pb.RoundMetrics(round=round_number, parties=parties, train_loss=train_loss)
        every = self.spec.evaluate_every
        if round_number == self.spec.rounds or (every and round_number % every == 0):
            overall, by_party = self.evaluate(round_number, chunks, info)
            if overall is not None:
                metrics.eval.CopyFrom(overall)
                telemetry.record_global_metrics(self.ctx.job_id, {"accuracy": overall.accuracy, "auc": overall.auc})
                for party_id, m in by_party.items():
                    metrics.eval_by_party[party_id].CopyFrom(m)
                    telemetry.MODEL_ACCURACY.labels(participant_id=party_id, job_id=self.ctx.job_id).set(m.accuracy)
                    telemetry.MODEL_AUC.labels(participant_id=party_id, job_id=self.ctx.job_id).set(m.auc)
        elapsed_s = time.monotonic() - started
        metrics.duration.CopyFrom(duration(elapsed_s))
        self.ctx.check_cancelled()
        self.ctx.checkpoints.save(self.ctx.job_id, round_number, weights)
        event = pb.JobEvent(job_id=self.ctx.job_id, type=pb.JOB_EVENT_TYPE_ROUND_COMMITTED, round=round_number,
                            metrics=metrics, total_rounds=self.spec.rounds)
        self.ctx.store.commit_round(self.ctx.job_id, metrics, event)  # the round and its event: one transaction
        crash_point("round_committed", round_number)
        self.ctx.notify()
        self.ctx.audit_round(metrics)
        self.ctx.checkpoints.prune(self.ctx.job_id, round_number)
        telemetry.TRAINING_LOSS.labels(job_id=self.ctx.job_id).set(train_loss)
        telemetry.ROUND_DURATION.observe(elapsed_s)
        self.ctx.log.info("round_committed", parties=parties, train_loss=train_loss,
                          auc=metrics.eval.auc if metrics.HasField("eval") else None, seconds=elapsed_s)
        return chunks

    # -- helpers ----------------------------------------------------------------
    def _check_aggregate(self, round_number: int, weights: Sequence[np.ndarray]) -> None:
        """Never commit a model that would poison every later round: finite and within max_abs_weight."""
        for array in weights:
            if not np.isfinite(array).all():
                raise JobFailed(f"round {round_number}: the aggregated model is not finite; it was not committed")
            if largest_magnitude(array) > self.spec.max_abs_weight:
                raise JobFailed(f"round {round_number}: the aggregated model has a weight beyond "
                                f"max_abs_weight={self.spec.max_abs_weight:g}; it was not committed")

    def _global_weights(self, global_chunks: Sequence[bytes], specs: Sequence[tensors.TensorSpec]) -> list[np.ndarray]:
        """The round's global model as arrays, only when max_update_norm needs it (it costs a model's memory)."""
        if not self.spec.max_update_norm:
            return []
        return tensors.assemble((party_pb2.TrainRequest.FromString(c).global_chunk for c in global_chunks), specs)

    def _task(self, round_number: int, info: pb.ModelInfo) -> party_pb2.TrainTask:
        s = self.spec
        return party_pb2.TrainTask(
            job_id=self.ctx.job_id, round=round_number, dataset=s.dataset, model=s.model,
            n_features=info.n_features, n_classes=info.n_classes, local_epochs=s.local_epochs,
            batch_size=s.batch_size, learning_rate=s.learning_rate, penalty=s.penalty, alpha=s.alpha,
            seed=s.seed * 1_000_003 + round_number, feature_mean=info.feature_mean, feature_scale=info.feature_scale,
            paillier_n=info.paillier_n, paillier_exponent=PAILLIER_EXPONENT if info.paillier_n else 0,
        )

    def _describe(self, holders: Sequence[pb.PartyInfo]) -> dict[str, party_pb2.DescribeDataResponse]:
        stats, failures = self.ctx.gather({
            p.party_id: self.ctx.parties.describe_data(p.address, self.ctx.job_id, self.spec.dataset,
                                                       self.ctx.call_timeout_s)
            for p in holders
        })
        for party in holders:
            reply = stats.get(party.party_id)
            if reply is None:
                continue
            try:
                check_description(reply, declared_dataset(party, self.spec.dataset))
            except BadReport as err:
                del stats[party.party_id]
                self.refused[party.party_id] = self._name_bad_party(
                    party.party_id, 0, f"refused its DescribeData reply and left out of the job: {err}")
        if len(stats) < self.spec.min_parties:
            detail = "; ".join(f"{p}: {why}" for p, why in sorted({**failures, **self.refused}.items()))
            raise JobFailed(f"could not describe dataset {self.spec.dataset!r} on min_parties={self.spec.min_parties} "
                            f"parties: {detail}")
        return stats

    def _name_bad_party(self, party_id: str, round_number: int, why: str) -> str:
        """A PARTY_DROPPED event and a warning naming the party whose reply was refused; returns the reason."""
        reason = f"INVALID_ARGUMENT: {why}"
        self.ctx.event(pb.JOB_EVENT_TYPE_PARTY_DROPPED, round_number, party_id=party_id, message=reason)
        self.ctx.log.warning("party_reply_refused", party_id=party_id, reason=reason)
        return reason

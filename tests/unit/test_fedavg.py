"""fedcore.ml.fedavg.StreamingFedAvg: the sample-weighted mean of updates streamed concurrently."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fedcore.ml.fedavg import StreamingFedAvg
from fedcore.tensors import TensorStreamReader, iter_chunks, specs_of

SHAPES = [(6, 5), (5,), (0,), (1,)]


def _model(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


SPECS = specs_of(_model(0))


def _stream(aggregator: StreamingFedAvg, party: str, weights: list[np.ndarray], chunk_bytes: int,
            before_chunk: threading.Barrier | None = None, order: list[str] | None = None) -> None:
    """What a servicer does with one party's update: validate each chunk, then add it."""
    reader = TensorStreamReader(SPECS)
    for chunk in iter_chunks(weights, chunk_bytes):
        part = reader.accept(chunk)
        if before_chunk is not None:
            before_chunk.wait(timeout=10)
        aggregator.add_update_chunk(party, part.tensor_index, part.element_offset, part.values)
        if order is not None:
            order.append(party)
    reader.finish()


def _expected_mean(updates: dict[str, list[np.ndarray]], samples: dict[str, int]) -> list[np.ndarray]:
    total = sum(samples.values())
    return [
        sum(samples[p] * updates[p][i].astype(np.float64) for p in updates) / total  # type: ignore[misc]
        for i in range(len(SHAPES))
    ]


def test_interleaved_updates_from_threads_average_to_the_weighted_mean() -> None:
    parties = [f"party-{k}" for k in range(5)]
    updates = {p: _model(k + 1) for k, p in enumerate(parties)}
    samples = {p: n for p, n in zip(parties, [1, 17, 250, 3, 1000], strict=True)}
    losses = {p: loss for p, loss in zip(parties, [0.9, 0.5, 0.25, 0.75, 0.125], strict=True)}
    aggregator = StreamingFedAvg(SPECS)
    # Every party sends the same number of chunks (the same specs); the barrier makes the
    # threads add their k-th chunks before anyone adds a (k+1)-th: real interleaving.
    lockstep = threading.Barrier(len(parties))
    order: list[str] = []
    errors: list[BaseException] = []

    def party_thread(party: str) -> None:
        try:
            aggregator.begin_update(party, samples[party])
            _stream(aggregator, party, updates[party], 28, lockstep, order)
            aggregator.finish_update(party, losses[party])
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            lockstep.abort()

    threads = [threading.Thread(target=party_thread, args=(p,)) for p in parties]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    chunks_each = len(list(iter_chunks(updates[parties[0]], 28)))
    assert chunks_each > 5 and len(order) == chunks_each * len(parties)
    assert all(sorted(order[i:i + len(parties)]) == parties for i in range(0, len(order), len(parties)))

    assert aggregator.completed() == parties
    result = aggregator.commit()
    assert result.parties == parties
    assert result.total_weight == sum(samples.values())
    expected_loss = sum(samples[p] * losses[p] for p in parties) / sum(samples.values())
    assert result.train_loss == pytest.approx(expected_loss, rel=1e-12)
    assert result.train_loss != pytest.approx(np.mean(list(losses.values())))  # weighted, not plain
    for got, want, spec in zip(result.weights, _expected_mean(updates, samples), SPECS, strict=True):
        assert got.shape == spec.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unsynchronised_threads_with_tiny_chunks_average_correctly() -> None:
    parties = [f"p{k}" for k in range(8)]
    updates = {p: _model(100 + k) for k, p in enumerate(parties)}
    samples = {p: 10 * (k + 1) for k, p in enumerate(parties)}
    aggregator = StreamingFedAvg(SPECS)
    for p in parties:
        aggregator.begin_update(p, samples[p])
    threads = [threading.Thread(target=_stream, args=(aggregator, p, updates[p], 4)) for p in parties]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for p in parties:
        aggregator.finish_update(p, 1.0)
    result = aggregator.commit()
    assert result.train_loss == pytest.approx(1.0)
    for got, want in zip(result.weights, _expected_mean(updates, samples), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _complete(aggregator: StreamingFedAvg, party: str, n: int, seed: int, loss: float = 0.5) -> list[np.ndarray]:
    weights = _model(seed)
    aggregator.begin_update(party, n)
    _stream(aggregator, party, weights, 64)
    aggregator.finish_update(party, loss)
    return weights


def test_abandon_before_any_chunk_does_not_taint() -> None:
    aggregator = StreamingFedAvg(SPECS)
    a = _complete(aggregator, "a", 3, 1)
    b = _complete(aggregator, "b", 1, 2)
    aggregator.begin_update("late", 1000)
    assert aggregator.abandon_update("late") is False
    assert aggregator.abandon_update("never-began") is False
    assert aggregator.tainted_by == set()
    result = aggregator.commit()
    assert result.parties == ["a", "b"]
    assert result.total_weight == 4
    for got, want in zip(result.weights, _expected_mean({"a": a, "b": b}, {"a": 3, "b": 1}), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_abandon_after_a_chunk_taints_and_commit_refuses() -> None:
    aggregator = StreamingFedAvg(SPECS)
    _complete(aggregator, "a", 3, 1)
    aggregator.begin_update("broken", 5)
    reader = TensorStreamReader(SPECS)
    part = reader.accept(next(iter_chunks(_model(9), 16)))
    aggregator.add_update_chunk("broken", part.tensor_index, part.element_offset, part.values)
    assert aggregator.abandon_update("broken") is True
    assert aggregator.tainted_by == {"broken"}
    assert aggregator.completed() == ["a"]
    with pytest.raises(RuntimeError, match=r"partial updates of \['broken'\] are in the sum"):
        aggregator.commit()


def test_a_finite_update_that_overflows_the_sum_is_refused_not_summed_to_inf() -> None:
    """3e38 is a finite float32 that passes the stream reader; times n_k it is not."""
    aggregator = StreamingFedAvg(SPECS)
    a = _complete(aggregator, "a", 3, 1)
    aggregator.begin_update("huge", 10)
    huge = [np.full(shape, 3e38, np.float32) for shape in SHAPES]
    part = TensorStreamReader(SPECS).accept(next(iter_chunks(huge, 1 << 20)))
    with pytest.raises(ValueError, match="overflows float32 in the sum"):
        aggregator.add_update_chunk("huge", part.tensor_index, part.element_offset, part.values)
    assert aggregator.abandon_update("huge") is True  # the round is retried without it, never committed
    with pytest.raises(RuntimeError, match="partial updates"):
        aggregator.commit()
    assert all(np.isfinite(w).all() for w in a)


def test_commit_refuses_while_an_update_is_streaming() -> None:
    aggregator = StreamingFedAvg(SPECS)
    _complete(aggregator, "a", 3, 1)
    aggregator.begin_update("slow", 2)
    with pytest.raises(RuntimeError, match="updates still streaming"):
        aggregator.commit()
    _stream(aggregator, "slow", _model(5), 64)
    with pytest.raises(RuntimeError, match="updates still streaming"):
        aggregator.commit()
    aggregator.finish_update("slow", 0.1)
    assert aggregator.commit().parties == ["a", "slow"]


def test_commit_refuses_without_any_update() -> None:
    with pytest.raises(RuntimeError, match="no complete update to average"):
        StreamingFedAvg(SPECS).commit()


def test_duplicate_begin_update_rejected() -> None:
    aggregator = StreamingFedAvg(SPECS)
    _complete(aggregator, "a", 3, 1)
    with pytest.raises(ValueError, match="party a already sent an update this round"):
        aggregator.begin_update("a", 3)
    aggregator.begin_update("b", 1)
    with pytest.raises(ValueError, match="party b already sent an update this round"):
        aggregator.begin_update("b", 1)


@pytest.mark.parametrize("n_samples", [0, -1])
def test_non_positive_sample_count_rejected(n_samples: int) -> None:
    aggregator = StreamingFedAvg(SPECS)
    with pytest.raises(ValueError, match=f"n_samples must be positive, got {n_samples}"):
        aggregator.begin_update("a", n_samples)
    assert aggregator.completed() == []
    aggregator.begin_update("a", 1)  # the refused call registered nothing

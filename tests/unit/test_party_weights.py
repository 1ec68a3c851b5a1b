"""FedAvg weights capped by max_party_weight (horizontal.capped_weights): shares, levels, equal-weight floor."""

from __future__ import annotations

import pytest

from fedsuite.coordinator.horizontal import capped_weights


def _shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {p: w / total for p, w in weights.items()}


def test_rows_under_the_cap_are_the_weights() -> None:
    assert capped_weights({"a": 171, "b": 171, "c": 113}, 0.5) == {"a": 171.0, "b": 171.0, "c": 113.0}
    assert capped_weights({"a": 5}, 0.5) == {"a": 5.0}


def test_one_huge_party_is_lowered_to_the_others_together() -> None:
    assert capped_weights({"a": 171, "b": 171, "x": 10**12}, 0.5) == {"a": 171.0, "b": 171.0, "x": 342.0}


def test_two_parties_under_half_weigh_alike() -> None:
    assert capped_weights({"a": 171, "x": 10**12}, 0.5) == {"a": 171.0, "x": 171.0}


def test_several_capped_parties_share_one_level() -> None:
    weights = capped_weights({"a": 100, "b": 10, "c": 10, "d": 10**9, "e": 7}, 0.3)
    shares = _shares(weights)
    assert shares["a"] == pytest.approx(0.3) and shares["d"] == pytest.approx(0.3)
    assert (weights["b"], weights["c"], weights["e"]) == (10.0, 10.0, 7.0)


def test_a_share_below_equal_weights_gives_equal_weights() -> None:
    assert capped_weights({"a": 1, "b": 2, "c": 3}, 0.1) == {"a": 1.0, "b": 1.0, "c": 1.0}

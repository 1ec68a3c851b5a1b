"""Checks of what a party reports about itself in a horizontal job, before the coordinator uses it.

A party with a valid certificate may still lie (issue 7): its dataset statistics feed every
party's standardisation and the model's shape, and its evaluation metrics feed the job's
overall metrics. Each reply is refused, naming the field, unless every field is in range and
agrees with the DatasetInfo the party declared at registration.
"""

from __future__ import annotations

import math

import numpy as np

from fedcore.proto import common_pb2, coordinator_pb2 as pb, party_pb2

MAX_ROWS = 10**12
"""Most training rows a party may report (the same bound as an update's n_samples)."""
MAX_CLASSES = 1000
"""Coordinator limit on class labels (0..999): labels set the model's output width, so one party's
label of 20000 would otherwise make a 30 x 20001 model for everyone."""
MAX_STATISTIC = 1e300
"""Largest |feature_sum| or feature_sum_sq; with the other checks the combined statistics stay finite."""
_ROUNDING = 1e-9
"""Relative slack of the check mean^2 <= mean of squares, for float rounding of constant features."""


class BadReport(ValueError):
    """A party's reply is out of range or contradicts its registration; the message says which field."""


def declared_dataset(party: pb.PartyInfo, dataset: str) -> common_pb2.DatasetInfo:
    """What ``party`` declared about ``dataset`` at registration (an empty DatasetInfo if nothing)."""
    return next((d for d in party.datasets if d.name == dataset), common_pb2.DatasetInfo(name=dataset))


def check_description(reply: party_pb2.DescribeDataResponse, declared: common_pb2.DatasetInfo) -> None:
    """Raises BadReport unless ``reply`` could describe the rows the party declared."""
    n, width = reply.n_rows, reply.n_features
    if not 0 < n <= MAX_ROWS:
        raise BadReport(f"n_rows={n} is not in 1..{MAX_ROWS}")
    if n != declared.n_rows:
        raise BadReport(f"n_rows={n} differs from the {declared.n_rows} training rows it declared at registration")
    if width != declared.n_features or width <= 0:
        raise BadReport(f"n_features={width} differs from the {declared.n_features} it declared at registration")
    for name, values in (("feature_sum", reply.feature_sum), ("feature_sum_sq", reply.feature_sum_sq)):
        if len(values) != width:
            raise BadReport(f"{name} has {len(values)} values for {width} features")
    sums = np.asarray(reply.feature_sum, dtype=np.float64)
    squares = np.asarray(reply.feature_sum_sq, dtype=np.float64)
    if not (np.isfinite(sums).all() and np.isfinite(squares).all()):
        raise BadReport("feature_sum or feature_sum_sq holds a NaN or infinity")
    if (squares < 0).any():
        raise BadReport("feature_sum_sq holds a negative value")
    if (np.abs(sums) > MAX_STATISTIC).any() or (squares > MAX_STATISTIC).any():
        raise BadReport(f"feature_sum or feature_sum_sq holds a value beyond {MAX_STATISTIC:g}")
    with np.errstate(over="ignore"):  # an overflowing mean^2 is inf, which the comparison refuses
        impossible = np.square(sums / n) > squares / n * (1 + _ROUNDING)
    if impossible.any():
        raise BadReport(f"feature_sum and feature_sum_sq of feature {int(np.argmax(impossible))} imply a "
                        "negative variance, which no rows have")
    _check_labels(list(reply.class_labels), n)


def _check_labels(labels: list[int], n_rows: int) -> None:
    """Distinct labels in 0..MAX_CLASSES-1, at least one, and no more than there are rows."""
    if not labels:
        raise BadReport("class_labels is empty; horizontal training needs labelled rows")
    if len(set(labels)) != len(labels) or len(labels) > n_rows:
        raise BadReport(f"class_labels must be distinct and no more than n_rows={n_rows} (got {len(labels)})")
    outside = [label for label in labels if not 0 <= label < MAX_CLASSES]
    if outside:
        raise BadReport(f"class label {outside[0]} is outside 0..{MAX_CLASSES - 1} (the coordinator's limit of "
                        f"{MAX_CLASSES} classes)")


def check_evaluation(metrics: common_pb2.EvalMetrics, declared: common_pb2.DatasetInfo, all_rows: bool = False) -> None:
    """Raises BadReport unless ``metrics`` are in range and count at most the rows declared (held-out
    ones, or with ``all_rows`` training and held-out ones)."""
    if not (math.isfinite(metrics.loss) and metrics.loss >= 0):
        raise BadReport(f"loss={metrics.loss} is not a finite number >= 0")
    if not 0 <= metrics.accuracy <= 1:
        raise BadReport(f"accuracy={metrics.accuracy} is outside [0, 1]")
    if not (math.isnan(metrics.auc) or 0 <= metrics.auc <= 1):  # nan: undefined with one class present
        raise BadReport(f"auc={metrics.auc} is outside [0, 1]")
    bound, which = ((declared.n_rows + declared.n_eval_rows, "rows") if all_rows
                    else (declared.n_eval_rows, "held-out rows"))
    if not 0 < metrics.n_samples <= bound:
        raise BadReport(f"n_samples={metrics.n_samples} is not in 1..{bound}, the {which} it declared at registration")

"""Vertical federated learning: parties hold different columns of the same rows.

Hetero logistic regression with an arbiter (DESIGN.md, "Vertical"), written against
fedcore.federation's context so it runs the same in memory and over gRPC.
"""

from fedcore.vertical.alignment import Alignment, align_guest, align_host
from fedcore.vertical.hetero_lr import (
    EpochDone,
    GuestModel,
    HostModel,
    TrainingReport,
    evaluate_binary,
    fit_arbiter,
    fit_guest,
    fit_host,
    predict_guest,
    predict_host,
)
from fedcore.vertical.params import HeteroLRParams

__all__ = [
    "Alignment",
    "EpochDone",
    "GuestModel",
    "HeteroLRParams",
    "HostModel",
    "TrainingReport",
    "align_guest",
    "align_host",
    "evaluate_binary",
    "fit_arbiter",
    "fit_guest",
    "fit_host",
    "predict_guest",
    "predict_host",
]

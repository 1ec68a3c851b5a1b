"""Pieces shared by both Flower deployment paths: the client and the timed FedAvg.

Runs inside Flower's own venv (bench/.flower-venv); fedsuite never imports it.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from flwr.client import NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.server.strategy import FedAvg

NUM_EXAMPLES = 100
NOISE_SCALE = 1e-3


def vm_hwm_kb(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a process, in KiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class BenchClient(NumPyClient):
    """Returns what it received plus small float32 noise; no training, no evaluation."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng()

    def get_parameters(self, config):  # only used if the server has no initial params
        return []

    def fit(self, parameters, config):
        out = []
        for p in parameters:
            p = np.asarray(p, dtype=np.float32)
            out.append(p + self._rng.standard_normal(p.shape, dtype=np.float32) * NOISE_SCALE)
        return out, NUM_EXAMPLES, {}

    def evaluate(self, parameters, config):
        return 0.0, NUM_EXAMPLES, {}


class TimedFedAvg(FedAvg):
    """FedAvg that appends one JSON line per event to a timing file.

    Events: ``configure_fit`` (a round starts) and ``aggregate_fit_end`` (a round's
    aggregation is done), each with ``time.monotonic()`` (system-wide on Linux,
    so comparable across processes), the pid and this process's VmHWM.
    """

    def __init__(self, timing_file: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._timing_file = timing_file

    def _log(self, event: str, server_round: int, **extra) -> None:
        if not self._timing_file:
            return
        rec = {
            "event": event,
            "round": server_round,
            "t": time.monotonic(),
            "pid": os.getpid(),
            "vm_hwm_kb": vm_hwm_kb(),
            **extra,
        }
        with open(self._timing_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    def configure_fit(self, server_round, parameters, client_manager):
        self._log("configure_fit", server_round)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        out = super().aggregate_fit(server_round, results, failures)
        self._log("aggregate_fit_end", server_round, results=len(results), failures=len(failures))
        return out


def make_strategy(n_clients: int, n_params: int, timing_file: str) -> TimedFedAvg:
    """FedAvg over all ``n_clients``; fit only, starting from zeros(n_params) float32."""
    init = ndarrays_to_parameters([np.zeros(n_params, dtype=np.float32)])
    return TimedFedAvg(
        timing_file=timing_file,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n_clients,
        min_evaluate_clients=0,
        min_available_clients=n_clients,
        initial_parameters=init,
    )

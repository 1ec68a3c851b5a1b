"""Logs and metrics every service shares.

Logs are structlog JSON lines on stderr; ``job_id``, ``round`` and ``party_id`` are
bound with :func:`bind` (context variables), so every line a job's thread writes
carries them. Metrics use the names operators already alert on (DESIGN.md,
"Operations") and are served over HTTP by :func:`start_metrics_server`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from fedcore.config import ListenError

PARTICIPANT_STATUS = Gauge(
    "federated_participant_status", "1 while a party heartbeats, 0 once it went silent", ["participant_id"]
)
TRAINING_LOSS = Gauge("federated_training_loss", "Sample-weighted training loss of the last round", ["job_id"])
MODEL_ACCURACY = Gauge(
    "federated_model_accuracy", "Accuracy of the global model on a party's held-out rows", ["participant_id", "job_id"]
)
MODEL_AUC = Gauge("federated_model_auc", "AUC of the global model on a party's held-out rows", ["participant_id", "job_id"])
# The job's own summary of the same evaluation (what `job get` shows), for dashboards: a weighted mean
# cannot be rebuilt in PromQL, which has no per-party row counts.
GLOBAL_ACCURACY = Gauge(
    "federated_global_model_accuracy",
    "Accuracy of the global model over all parties' held-out rows (sample-weighted; vertical: the guest's)", ["job_id"]
)
GLOBAL_AUC = Gauge(
    "federated_global_model_auc",
    "AUC of the global model over all parties' held-out rows (sample-weighted; vertical: the guest's)", ["job_id"]
)
COMMUNICATION_BYTES = Counter(
    "federated_communication_bytes_total",
    "Payload bytes sent and received: tensors, and vertical jobs' Federation.Exchange messages",
    ["direction", "peer"],
)
DECRYPTIONS = Counter(
    "federated_decryptions_total",
    "Ciphertexts the arbiter decrypted: masked vertical gradients and losses, aggregated sums",
    ["job_id"],
)
ROUND_DURATION = Histogram(
    "federated_round_duration_seconds",
    "Wall-clock seconds per round: committed rounds on the coordinator, each vertical epoch on parties and the arbiter",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300),
)
ROUNDS_TOTAL = Counter("federated_rounds_total", "Rounds by outcome", ["outcome"])
JOBS_TOTAL = Counter(
    "federated_jobs_total", "Jobs that ended on this coordinator, by final state (succeeded, failed, cancelled)", ["state"]
)
PRIVACY_BUDGET_CONSUMED = Gauge("federated_privacy_budget_consumed", "Epsilon spent so far", ["job_id"])
PRIVACY_BUDGET_TOTAL = Gauge("federated_privacy_budget_total", "Epsilon a job may spend", ["job_id"])


def record_model_metrics(participant_id: str, job_id: str, metrics: Mapping[str, float]) -> None:
    """A model's evaluation on a party's rows, in the AUC and accuracy gauges (absent keys are left alone)."""
    _set_evaluation(MODEL_AUC, MODEL_ACCURACY, metrics, participant_id=participant_id, job_id=job_id)


def record_global_metrics(job_id: str, metrics: Mapping[str, float]) -> None:
    """A job's overall evaluation of its global model, in the global AUC and accuracy gauges."""
    _set_evaluation(GLOBAL_AUC, GLOBAL_ACCURACY, metrics, job_id=job_id)


def _set_evaluation(auc: Gauge, accuracy: Gauge, metrics: Mapping[str, float], **labels: str) -> None:
    for gauge, key in ((auc, "auc"), (accuracy, "accuracy")):
        if key in metrics:
            gauge.labels(**labels).set(metrics[key])


def configure_logging(service: str, node_id: str, level: str = "info") -> None:
    """JSON logs on stderr, every line tagged with the service and node.

    The tags go into each event rather than the context: a thread (the party's heartbeat,
    gRPC's handlers) starts with an empty context and its lines would lack them. Python's
    own logging (grpc's ``grpc._server``, warnings) and exceptions that end a thread come
    out as the same JSON.
    """
    tags = {"service": service, "node_id": node_id}

    def tag(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {**tags, **event}

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        tag,
    ]
    render = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=True)]
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_crash


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread, as one JSON line instead of a bare traceback."""
    if args.exc_type is SystemExit:
        return
    structlog.get_logger().error("thread_crashed", thread=args.thread.name if args.thread else None,
                                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def get_logger(**initial: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``initial`` values bound (lazy until first use, so module-level loggers
    pick up the configuration made later by :func:`configure_logging`)."""
    return structlog.get_logger(**initial)


@contextmanager
def bind(**values: Any) -> Iterator[None]:
    """Bind ``job_id``/``round``/``party_id`` (etc.) to every log line inside the block."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def start_metrics_server(listen: str | None) -> int | None:
    """Serve /metrics on ``host:port`` (port 0 picks a free one); None disables. Returns the port."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    except OSError as err:
        raise ListenError(listen, (err.strerror or str(err)).lower()) from None
    return int(server.server_port)

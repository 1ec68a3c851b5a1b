"""Bad input gets the right gRPC status and never touches the global model.

Servers run in this process on 127.0.0.1 over real mTLS; the adversarial party is a
real gRPC Party server with a valid certificate that answers with broken updates.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2

from fedcore import tensors
from fedcore.data import DatasetConfig
from fedcore.proto import common_pb2, coordinator_pb2 as pb, coordinator_pb2_grpc, party_pb2, party_pb2_grpc
from fedcore.proto import vertical_pb2
from fedcore.rpc import MAX_MESSAGE_BYTES, ChannelPool, make_channel, make_server, service
from fedcore.tls import Identity, TlsFiles, init_ca, issue_node

from fedsuite.client import CoordinatorAdmin
from fedsuite.coordinator import Coordinator
from fedsuite.demo import horizontal_job
from fedsuite.party import Party, PartyConfig
from fedsuite.party.datasets import DatasetCatalog
from fedsuite.party.models import ModelStore
from fedsuite.party.vertical import VerticalParty
from fedsuite.vertical_node import VerticalEndpoint
from fedsuite.party.servicer import POLICY as PARTY_POLICY
from fedsuite.party.servicer import PartyServicer
from fedsuite.party.work import LocalWork
from tests.conftest import in_process_coordinator, tls, tls_config

DEADLINE = 10.0


@pytest.fixture
def coordinator(pki: Path, tmp_path: Path) -> Iterator[Coordinator]:
    service = in_process_coordinator(pki, tmp_path)
    yield service
    service.stop()


def start_party(pki: Path, breast_dir: Path, coordinator: Coordinator, name: str) -> Party:
    config = PartyConfig(
        node_id=name, listen="127.0.0.1:0", tls=tls_config(pki, name), coordinator=f"127.0.0.1:{coordinator.port}",
        datasets={"breast": DatasetConfig(path=str(breast_dir / f"{name}-train.csv"),
                                          eval_path=str(breast_dir / f"{name}-eval.csv"), label="target")},
    )
    party = Party(config, breast_dir)
    assert party.registered.wait(DEADLINE)
    return party


@pytest.fixture
def parties(pki: Path, breast_dir: Path, coordinator: Coordinator) -> Iterator[dict[str, Party]]:
    started = {name: start_party(pki, breast_dir, coordinator, name) for name in ("party-a", "party-b")}
    yield started
    for party in started.values():
        party.stop()


def admin(pki: Path, coordinator: Coordinator) -> CoordinatorAdmin:
    return CoordinatorAdmin(f"127.0.0.1:{coordinator.port}", tls(pki, "admin"), timeout_s=DEADLINE)


def stub_as(pki: Path, name: str, port: int) -> coordinator_pb2_grpc.CoordinatorStub:
    return coordinator_pb2_grpc.CoordinatorStub(make_channel(f"127.0.0.1:{port}", tls(pki, name)))


def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details()  # type: ignore[attr-defined]


# -- authentication and authorisation ---------------------------------------------------------
def test_client_without_certificate_is_refused(pki: Path, coordinator: Coordinator) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    channel = grpc.secure_channel(f"127.0.0.1:{coordinator.port}", credentials)
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    code, _ = code_of(lambda: stub.ListParties(pb.ListPartiesRequest(), timeout=DEADLINE))
    assert code == grpc.StatusCode.UNAVAILABLE  # refused in the TLS handshake, before any method runs


def test_certificate_from_another_ca_is_refused(foreign_pki: Path, coordinator: Coordinator) -> None:
    stub = coordinator_pb2_grpc.CoordinatorStub(
        make_channel(f"127.0.0.1:{coordinator.port}", tls(foreign_pki, "admin")))
    code, _ = code_of(lambda: stub.ListParties(pb.ListPartiesRequest(), timeout=DEADLINE))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(coordinator: Coordinator) -> None:
    stub = coordinator_pb2_grpc.CoordinatorStub(
        make_channel(f"127.0.0.1:{coordinator.port}", None, Identity("admin", "admin")))
    code, _ = code_of(lambda: stub.ListParties(pb.ListPartiesRequest(), timeout=DEADLINE))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_party_may_not_call_admin_methods(pki: Path, coordinator: Coordinator) -> None:
    stub = stub_as(pki, "party-a", coordinator.port)
    code, details = code_of(lambda: stub.SubmitJob(pb.SubmitJobRequest(spec=horizontal_job(1)), timeout=DEADLINE))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "party-a" in details
    code, _ = code_of(lambda: stub.ListParties(pb.ListPartiesRequest(), timeout=DEADLINE))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_admin_may_not_register_as_party(pki: Path, coordinator: Coordinator) -> None:
    stub = stub_as(pki, "admin", coordinator.port)
    request = pb.RegisterPartyRequest(party_id="admin", role=common_pb2.PARTY_ROLE_GUEST, address="127.0.0.1:1")
    assert code_of(lambda: stub.RegisterParty(request, timeout=DEADLINE))[0] == grpc.StatusCode.PERMISSION_DENIED


def test_party_may_not_speak_for_another(pki: Path, coordinator: Coordinator) -> None:
    stub = stub_as(pki, "party-a", coordinator.port)
    request = pb.RegisterPartyRequest(party_id="party-b", role=common_pb2.PARTY_ROLE_GUEST, address="127.0.0.1:1")
    code, details = code_of(lambda: stub.RegisterParty(request, timeout=DEADLINE))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "party-b" in details
    code, _ = code_of(lambda: stub.Heartbeat(pb.HeartbeatRequest(party_id="party-b"), timeout=DEADLINE))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_party_may_not_call_another_party(pki: Path, breast_dir: Path, coordinator: Coordinator,
                                          parties: dict[str, Party]) -> None:
    channel = make_channel(f"127.0.0.1:{parties['party-b'].port}", tls(pki, "party-a"))
    stub = party_pb2_grpc.PartyStub(channel)
    request = party_pb2.DescribeDataRequest(job_id="j", dataset="breast")
    code, details = code_of(lambda: stub.DescribeData(request, timeout=DEADLINE))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "coordinator" in details


# -- coordinator API ----------------------------------------------------------------------------
def test_unknown_party_heartbeat_is_not_found(pki: Path, coordinator: Coordinator) -> None:
    stub = stub_as(pki, "party-x", coordinator.port)
    code, details = code_of(lambda: stub.Heartbeat(pb.HeartbeatRequest(party_id="party-x"), timeout=DEADLINE))
    assert code == grpc.StatusCode.NOT_FOUND and "RegisterParty" in details


@pytest.mark.parametrize("field, value", [("address", "not an address"), ("role", 0), ("party_id", "")])
def test_bad_registration_is_invalid(pki: Path, coordinator: Coordinator, field: str, value: object) -> None:
    request = pb.RegisterPartyRequest(party_id="party-x", role=common_pb2.PARTY_ROLE_GUEST, address="127.0.0.1:9")
    setattr(request, field, value)
    stub = stub_as(pki, "party-x", coordinator.port)
    code, _ = code_of(lambda: stub.RegisterParty(request, timeout=DEADLINE))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("field, value, named", [
    ("learning_rate", -1.0, "horizontal.learning_rate"),
    ("rounds", -3, "horizontal.rounds"),
    ("fraction", 1.5, "horizontal.fraction"),
    ("dataset", "", "horizontal.dataset"),
])
def test_bad_job_spec_names_the_field(pki: Path, coordinator: Coordinator, field: str, value: object, named: str) -> None:
    spec = horizontal_job(3)
    setattr(spec.horizontal, field, value)
    with admin(pki, coordinator) as client:
        code, details = code_of(lambda: client.submit(spec))
        assert client.list() == []  # nothing was stored
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details


@pytest.mark.parametrize("spec, named", [
    (pb.JobSpec(horizontal=pb.HorizontalJobSpec(dataset="breast", model=pb.ModelSpec(type=1), penalty=9)),
     "horizontal.penalty must be one of PENALTY_NONE, PENALTY_L2, PENALTY_L1 (got 9)"),
    (pb.JobSpec(horizontal=pb.HorizontalJobSpec(dataset="breast", model=pb.ModelSpec(type=7))),
     "horizontal.model.type must be one of MODEL_TYPE_LOGISTIC_REGRESSION, MODEL_TYPE_MLP, MODEL_TYPE_VECTOR (got 7)"),
    (pb.JobSpec(horizontal=pb.HorizontalJobSpec(dataset="breast", model=pb.ModelSpec(type=1),
                                                round_timeout=duration_pb2.Duration(seconds=-5))),
     "horizontal.round_timeout must be in (0, 86400] s (got -5 s)"),
    (pb.JobSpec(vertical=vertical_pb2.VerticalJobSpec(
        guest="a", hosts=["b"], guest_dataset="g", host_dataset="h",
        params=vertical_pb2.HeteroLRParams(optimizer=vertical_pb2.OPTIMIZER_ADAM, early_stop=42))),
     "vertical.params.early_stop must be one of EARLY_STOP_DIFF, EARLY_STOP_ABS, EARLY_STOP_WEIGHT_DIFF (got 42)"),
])
def test_enum_values_and_durations_out_of_range_name_the_field(pki: Path, coordinator: Coordinator, spec: pb.JobSpec,
                                                                named: str) -> None:
    """proto3 keeps enum numbers its enum lacks (a client built from newer protos, or a typo in grpcurl
    JSON's number): the coordinator refuses them at submit, as it does a negative timeout."""
    with admin(pki, coordinator) as client:
        code, details = code_of(lambda: client.submit(spec))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details, details


def test_unknown_job_is_not_found_everywhere(pki: Path, coordinator: Coordinator) -> None:
    with admin(pki, coordinator) as client:
        for call in (lambda: client.get("nope"), lambda: client.cancel("nope"),
                     lambda: list(client.watch("nope", 5)), lambda: client.download_model("nope")):
            code, details = code_of(call)
            assert code == grpc.StatusCode.NOT_FOUND and "nope" in details


# -- party API -------------------------------------------------------------------------------------
def _task(**changes: object) -> party_pb2.TrainTask:
    task = party_pb2.TrainTask(job_id="job-1", round=1, dataset="breast",
                               model=pb.ModelSpec(type=pb.MODEL_TYPE_LOGISTIC_REGRESSION), n_features=30, n_classes=2,
                               local_epochs=1, batch_size=16, learning_rate=0.1, penalty=common_pb2.PENALTY_NONE)
    for key, value in changes.items():
        setattr(task, key, value)
    return task


def _weights(shape: tuple[int, ...] = (30, 1)) -> list[np.ndarray]:
    return [np.zeros(shape, np.float32), np.zeros((1,), np.float32)]


def _train_requests(task: party_pb2.TrainTask, weights: list[np.ndarray]) -> list[party_pb2.TrainRequest]:
    return [party_pb2.TrainRequest(task=task), *(party_pb2.TrainRequest(global_chunk=c)
                                                 for c in tensors.iter_chunks(weights))]


def _train(pki: Path, party: Party, requests: list[party_pb2.TrainRequest]) -> list[party_pb2.TrainResponse]:
    stub = party_pb2_grpc.PartyStub(make_channel(f"127.0.0.1:{party.port}", tls(pki, "coordinator")))
    return list(stub.Train(iter(requests), timeout=DEADLINE))


def _nan_weights() -> list[np.ndarray]:
    weights = _weights()
    weights[0][3, 0] = np.nan
    return weights


def _overrun() -> list[party_pb2.TrainRequest]:
    """The first tensor's chunk carries one float more than the tensor holds."""
    requests = _train_requests(_task(), _weights())
    requests[1].global_chunk.data += b"\0\0\0\0"
    return requests


def _oversized() -> list[party_pb2.TrainRequest]:
    chunk = next(tensors.iter_chunks([np.zeros(MAX_MESSAGE_BYTES // 4 + 16, np.float32)], chunk_bytes=MAX_MESSAGE_BYTES * 2))
    return [party_pb2.TrainRequest(task=_task()), party_pb2.TrainRequest(global_chunk=chunk)]


@pytest.mark.parametrize("requests, expected, words", [
    (lambda: _train_requests(_task(), _weights())[1:], grpc.StatusCode.INVALID_ARGUMENT, "start with a task"),
    (lambda: _train_requests(_task(dataset="other"), _weights()), grpc.StatusCode.NOT_FOUND, "other"),
    (lambda: _train_requests(_task(job_id=""), _weights()), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
    (lambda: _train_requests(_task(n_features=12), _weights((12, 1))), grpc.StatusCode.FAILED_PRECONDITION, "features"),
    (lambda: _train_requests(_task(), _weights((1, 30))), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (lambda: _train_requests(_task(), _nan_weights()), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    (lambda: _train_requests(_task(), _weights())[:2], grpc.StatusCode.INVALID_ARGUMENT, "ended early"),
    (_overrun, grpc.StatusCode.INVALID_ARGUMENT, "overruns"),
    (_oversized, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
])
def test_party_rejects_bad_train_streams(pki: Path, breast_dir: Path, coordinator: Coordinator,
                                         parties: dict[str, Party], requests, expected, words) -> None:  # type: ignore[no-untyped-def]
    code, details = code_of(lambda: _train(pki, parties["party-a"], requests()))
    assert code == expected and words in details, details
    # the party still serves a good stream afterwards
    responses = _train(pki, parties["party-a"], _train_requests(_task(round=5), _weights()))
    assert responses[0].summary.n_samples > 0


def test_party_refuses_a_round_older_than_one_it_trained(pki: Path, breast_dir: Path, coordinator: Coordinator,
                                                         parties: dict[str, Party]) -> None:
    _train(pki, parties["party-a"], _train_requests(_task(round=4), _weights()))
    code, details = code_of(lambda: _train(pki, parties["party-a"], _train_requests(_task(round=2), _weights())))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "older" in details


# -- an adversarial party never touches the global model ----------------------------------------------
class BrokenParty(party_pb2_grpc.PartyServicer):
    """Lies in one way (``mode``): in its Train update, its DescribeData statistics (DESCRIBE_LIES)
    or its Evaluate metrics (EVALUATE_LIES); honest in the rest.

    An Evaluate liar answers Train for another job, so that its update never counts and the
    model, and so the honest parties' metrics, equal those of the run without it."""

    def __init__(self, honest: party_pb2_grpc.PartyServicer, mode: str) -> None:
        self._honest = honest
        self._mode = mode
        self._failed_once = False

    def DescribeData(self, request, context):  # type: ignore[no-untyped-def]
        reply = self._honest.DescribeData(request, context)
        if self._mode in DESCRIBE_LIES:
            DESCRIBE_LIES[self._mode][0](reply)
        if self._mode == "heavy":  # as many rows as it declared: nothing to refuse
            reply.n_rows = HEAVY_ROWS
        return reply

    def Evaluate(self, request_iterator, context):  # type: ignore[no-untyped-def]
        if self._mode not in EVALUATE_LIES:
            return self._honest.Evaluate(request_iterator, context)
        for _ in request_iterator:
            pass
        return party_pb2.EvaluateResponse(metrics=common_pb2.EvalMetrics(**EVALUATE_LIES[self._mode][0]))

    def Train(self, request_iterator, context):  # type: ignore[no-untyped-def]
        if self._mode == "fails_round_2_once":  # honest, but its first round-2 update answers another job
            first = next(request_iterator)
            if first.task.round != 2 or self._failed_once:
                yield from self._honest.Train(itertools.chain([first], request_iterator), context)
                return
            self._failed_once = True
            request_iterator = itertools.chain([first], request_iterator)
        task = next(request_iterator).task
        for _ in request_iterator:
            pass
        round_number = task.round + (1 if self._mode == "wrong_round" else 0)
        job_id = "another-job" if self._mode in ("wrong_job", "fails_round_2_once") or self._mode in EVALUATE_LIES \
            else task.job_id
        # within the 113 rows it declared, so that only the values lie, except when the count is the lie
        n_samples = {"inflated": 10**12, "heavy": HEAVY_ROWS}.get(self._mode, 100)
        yield party_pb2.TrainResponse(summary=party_pb2.UpdateSummary(
            job_id=job_id, round=round_number, n_samples=n_samples, train_loss=0.1))
        shape = (29, 1) if self._mode == "wrong_shape" else (30, 1)
        kernel = np.full(shape, FINITE_ATTACKS.get(self._mode, 1e6), np.float32)
        if self._mode == "nan":
            kernel[-1, 0] = np.nan
        bias = np.full((1,), 1e6, np.float32)
        if self._mode == "heavy":  # a model of zeros, which pulls the average towards 0 by its weight
            kernel[:], bias[:] = 0.0, 0.0
        for chunk in tensors.iter_chunks([kernel, bias], chunk_bytes=64):
            yield party_pb2.TrainResponse(update_chunk=chunk)
        if self._mode == "extra_chunk":
            yield party_pb2.TrainResponse(update_chunk=chunk)


FINITE_ATTACKS = {"huge": 3e38, "far": 1e4}
"""Finite values that pass the NaN/Inf check: float32's edge (overflows a float32 sum), and a long way off."""
HEAVY_ROWS = 10**6
"""The training rows a "heavy" party-x declares, describes and trains on, all alike (it holds 113)."""


def _set(field: str, value: object) -> Callable[[party_pb2.DescribeDataResponse], None]:
    return lambda reply: setattr(reply, field, value)


def _set_item(field: str, index: int, value: float) -> Callable[[party_pb2.DescribeDataResponse], None]:
    return lambda reply: getattr(reply, field).__setitem__(index, value)


DESCRIBE_LIES: dict[str, tuple[Callable[[party_pb2.DescribeDataResponse], None], str]] = {
    "nan_sum": (_set_item("feature_sum", 3, float("nan")), "feature_sum or feature_sum_sq holds a NaN"),
    "label_20000": (lambda r: r.class_labels.append(20000), "class label 20000 is outside 0..999"),
    "label_1e12": (lambda r: r.class_labels.append(10**12), "class label 1000000000000 is outside"),
    "negative_label": (lambda r: r.class_labels.append(-1), "class label -1 is outside"),
    "negative_rows": (_set("n_rows", -5), "n_rows=-5 is not in 1.."),
    "more_rows": (lambda r: setattr(r, "n_rows", r.n_rows * 1000), "training rows it declared at registration"),
    "ragged_sq": (lambda r: r.feature_sum_sq.pop(), "feature_sum_sq has 29 values for 30 features"),
    "negative_sq": (_set_item("feature_sum_sq", 0, -1.0), "feature_sum_sq holds a negative value"),
    "huge_sq": (_set_item("feature_sum_sq", 0, 1e305), "beyond 1e+300"),
    "impossible_sum": (_set_item("feature_sum", 0, 1e9), "of feature 0 imply a negative variance"),
    "wrong_width": (_set("n_features", 31), "n_features=31 differs from the 30"),
}
"""DescribeData lies, each with the words of its refusal."""

EVALUATE_LIES: dict[str, tuple[dict[str, float], str]] = {
    "auc_7.5": (dict(loss=0.1, accuracy=0.9, auc=7.5, n_samples=10**15), "auc=7.5 is outside [0, 1]"),
    "rows_1e15": (dict(loss=0.1, accuracy=0.9, auc=0.9, n_samples=10**15), "n_samples=1000000000000000 is not in 1.."),
    "nan_loss": (dict(loss=float("nan"), accuracy=0.9, auc=0.9, n_samples=10), "loss=nan is not a finite number"),
    "negative_loss": (dict(loss=-1.0, accuracy=0.9, auc=0.9, n_samples=10), "loss=-1.0 is not a finite number"),
    "accuracy_2": (dict(loss=0.1, accuracy=2.0, auc=0.9, n_samples=10), "accuracy=2.0 is outside [0, 1]"),
}
"""Evaluate lies, each with the words of its refusal."""


def _run_job(pki: Path, coordinator: Coordinator, max_update_norm: float = 0.0, standardize: bool = False,
             min_parties: int = 2, rounds: int = 2, max_party_weight: float | None = None,
             ) -> tuple[pb.Job, list[np.ndarray]]:
    spec = horizontal_job(rounds)
    spec.horizontal.min_parties = min_parties
    if max_party_weight is not None:
        spec.horizontal.max_party_weight = max_party_weight
    spec.horizontal.max_update_norm = max_update_norm
    spec.horizontal.standardize = standardize  # off: the model depends on the updates alone, not on who described data
    with admin(pki, coordinator) as client:
        job_id = client.submit(spec)
        final = client.wait(job_id, 120)
        if final.state != pb.JOB_STATE_SUCCEEDED:
            return final, []
        return final, client.download_model(job_id).weights


def _events(pki: Path, coordinator: Coordinator, job_id: str, kind: int) -> list[pb.JobEvent]:
    with admin(pki, coordinator) as client:
        return [e for e in client.watch(job_id, 5) if e.type == kind]


@contextmanager
def broken_party(pki: Path, breast_dir: Path, coordinator: Coordinator, mode: str, name: str = "party-x") -> Iterator[None]:
    """``name`` (party-x), registered with a valid certificate and what it holds (party-c's rows),
    lying as BrokenParty's ``mode`` says."""
    catalog = DatasetCatalog({"breast": DatasetConfig(path=str(breast_dir / "party-c-train.csv"),
                                                      eval_path=str(breast_dir / "party-c-eval.csv"), label="target")},
                             breast_dir)
    broken = make_server("127.0.0.1:0", tls(pki, name), PARTY_POLICY, [service(
        party_pb2_grpc.add_PartyServicer_to_server, BrokenParty(_honest_servicer(pki, breast_dir, catalog, name), mode),
        "fedsuite.v1.Party")])
    try:
        stub = stub_as(pki, name, coordinator.port)
        datasets = catalog.describe()
        if mode == "heavy":
            datasets[0].n_rows = HEAVY_ROWS
        stub.RegisterParty(pb.RegisterPartyRequest(party_id=name, role=common_pb2.PARTY_ROLE_GUEST,
                                                   address=f"127.0.0.1:{broken.port}", datasets=datasets), timeout=DEADLINE)
        yield
    finally:
        broken.stop(0)


def _without_and_with_the_liar(pki: Path, breast_dir: Path, coordinator: Coordinator, mode: str,
                               **job: Any) -> tuple[pb.Job, pb.Job, list[pb.JobEvent]]:
    """The job run by party-a and party-b alone, then with party-x lying as ``mode`` says: both
    succeed, party-x is in no round, and the two models are the same to the bit. Returns both jobs
    and the second one's PARTY_DROPPED events."""
    honest, honest_weights = _run_job(pki, coordinator, **job)
    assert honest.state == pb.JOB_STATE_SUCCEEDED, honest.reason
    with broken_party(pki, breast_dir, coordinator, mode):
        final, weights = _run_job(pki, coordinator, **job)
        dropped = _events(pki, coordinator, final.job_id, pb.JOB_EVENT_TYPE_PARTY_DROPPED)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert all(sorted(r.parties) == ["party-a", "party-b"] for r in final.rounds)
    assert [w.shape for w in weights] == [w.shape for w in honest_weights]
    for mine, theirs in zip(weights, honest_weights):
        np.testing.assert_array_equal(mine, theirs)
    return honest, final, dropped


@pytest.mark.parametrize("mode", ["nan", "wrong_shape", "wrong_round", "wrong_job", "extra_chunk"])
def test_broken_update_is_dropped_and_the_model_is_untouched(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party], mode: str,
) -> None:
    _without_and_with_the_liar(pki, breast_dir, coordinator, mode)


@pytest.mark.parametrize("mode, bound, why", [
    ("huge", 0.0, "max_abs_weight=1e+06"),
    ("far", 100.0, "max_update_norm=100"),
    ("inflated", 0.0, "n_samples=1000000000000 is not in 1..113, the training rows it declared at registration"),
])
def test_finite_but_poisonous_update_is_refused_with_the_party_named(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party], mode: str, bound: float, why: str,
) -> None:
    _, _, dropped = _without_and_with_the_liar(pki, breast_dir, coordinator, mode, max_update_norm=bound)
    assert dropped and all(e.party_id == "party-x" and "INVALID_ARGUMENT" in e.message and why in e.message
                           for e in dropped), [e.message for e in dropped]


def _honest_servicer(pki: Path, breast_dir: Path, catalog: DatasetCatalog, name: str) -> party_pb2_grpc.PartyServicer:
    work = LocalWork(catalog)
    endpoint = VerticalEndpoint(name, ChannelPool(tls(pki, name)), insecure=False)
    return PartyServicer(work, name, VerticalParty(work, ModelStore(breast_dir / "models", name), breast_dir / "scores"),
                         endpoint.node)


def test_a_party_declaring_many_rows_carries_at_most_max_party_weight(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party],
) -> None:
    honest_final, honest_weights = _run_job(pki, coordinator, rounds=1)
    assert honest_final.state == pb.JOB_STATE_SUCCEEDED, honest_final.reason
    with broken_party(pki, breast_dir, coordinator, "heavy"):
        final, weights = _run_job(pki, coordinator, rounds=1)  # the default, 0.5
        plain_final, plain_weights = _run_job(pki, coordinator, rounds=1, max_party_weight=1.0)
    for job in (final, plain_final):
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.reason
        assert [sorted(r.parties) for r in job.rounds] == [["party-a", "party-b", "party-x"]]
    # party-x's zeros weigh as much as party-a's and party-b's 171 rows each together: half the model
    for mine, theirs in zip(weights, honest_weights):
        np.testing.assert_array_equal(mine, theirs / 2)
    # with plain FedAvg its 10^6 declared rows would have taken all but 342 / (10^6 + 342) of the weight
    for mine, theirs in zip(plain_weights, honest_weights):
        np.testing.assert_allclose(mine, theirs * 342 / (HEAVY_ROWS + 342), rtol=1e-5, atol=1e-9)


def test_a_round_that_dropped_below_max_party_weight_is_retried_without_the_dropped_party(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party],
) -> None:
    honest_final, honest_weights = _run_job(pki, coordinator, rounds=1)
    with broken_party(pki, breast_dir, coordinator, "heavy"), \
            broken_party(pki, breast_dir, coordinator, "wrong_job", name="party-c"):
        final, weights = _run_job(pki, coordinator, rounds=1)
        retried = _events(pki, coordinator, final.job_id, pb.JOB_EVENT_TYPE_ROUND_RETRIED)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    # planned: 171, 171, 113 and party-x lowered to 455 (half); without party-c, party-x would carry 455/797
    assert [e.message for e in retried] == [
        "attempt 1: without the dropped parties, party-x would carry 0.571 of the weight, above max_party_weight=0.5"]
    assert [sorted(r.parties) for r in final.rounds] == [["party-a", "party-b", "party-x"]]
    for mine, theirs in zip(weights, honest_weights):
        np.testing.assert_array_equal(mine, theirs / 2)


def test_a_party_refused_at_setup_is_refused_again_when_the_job_resumes(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party],
) -> None:
    spec = horizontal_job(2)
    spec.horizontal.min_parties, spec.horizontal.max_round_retries, spec.horizontal.standardize = 3, 0, False
    with broken_party(pki, breast_dir, coordinator, "nan_sum"), \
            broken_party(pki, breast_dir, coordinator, "fails_round_2_once", name="party-c"), \
            admin(pki, coordinator) as client:
        job_id = client.submit(spec)
        failed = client.wait(job_id, 120)  # round 2 misses its quorum of 3 once party-c drops
        assert failed.state == pb.JOB_STATE_FAILED and [r.round for r in failed.rounds] == [1], failed.reason
        client.resume(job_id)
        final = client.wait(job_id, 120)
        dropped = _events(pki, coordinator, job_id, pb.JOB_EVENT_TYPE_PARTY_DROPPED)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert [r.round for r in final.rounds] == [1, 2]
    assert all(sorted(r.parties) == ["party-a", "party-b", "party-c"] for r in final.rounds)
    refusals = [e for e in dropped if e.party_id == "party-x"]
    assert len(refusals) == 2 and all("refused its DescribeData reply" in e.message for e in refusals)


@pytest.mark.parametrize("mode", sorted(DESCRIBE_LIES))
def test_lying_data_description_is_refused_and_left_out_of_the_statistics(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party], mode: str,
) -> None:
    # the same model, so of the same shape: a label of 20000 made a 30 x 20001 model before
    _, _, dropped = _without_and_with_the_liar(pki, breast_dir, coordinator, mode, standardize=True)
    words = DESCRIBE_LIES[mode][1]
    assert [(e.party_id, e.round) for e in dropped] == [("party-x", 0)], [e.message for e in dropped]
    assert "INVALID_ARGUMENT: refused its DescribeData reply" in dropped[0].message and words in dropped[0].message


def test_lying_description_fails_the_job_naming_the_party_when_the_quorum_needs_it(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party],
) -> None:
    with broken_party(pki, breast_dir, coordinator, "label_1e12"):
        final, _ = _run_job(pki, coordinator, standardize=True, min_parties=3)
    assert final.state == pb.JOB_STATE_FAILED
    assert "party-x: INVALID_ARGUMENT: refused its DescribeData reply" in final.reason, final.reason
    assert "class label 1000000000000 is outside" in final.reason and "internal error" not in final.reason


@pytest.mark.parametrize("mode", sorted(EVALUATE_LIES))
def test_lying_evaluation_is_refused_and_left_out_of_the_metrics(
    pki: Path, breast_dir: Path, coordinator: Coordinator, parties: dict[str, Party], mode: str,
) -> None:
    honest_final, final, dropped = _without_and_with_the_liar(pki, breast_dir, coordinator, mode)
    refusals = [e for e in dropped if "Evaluate" in e.message]
    assert [(e.party_id, e.round) for e in refusals] == [("party-x", r.round) for r in final.rounds]
    assert all("INVALID_ARGUMENT: refused its Evaluate reply" in e.message and EVALUATE_LIES[mode][1] in e.message
               for e in refusals), [e.message for e in refusals]
    for mine, theirs in zip(final.rounds, honest_final.rounds):
        assert sorted(mine.eval_by_party) == ["party-a", "party-b"]
        assert mine.eval == theirs.eval and 0 <= mine.eval.auc <= 1


def test_certificate_without_a_fedsuite_role_is_unauthenticated(pki: Path, tmp_path: Path, coordinator: Coordinator) -> None:
    shutil.copy(pki / "ca.pem", tmp_path / "ca.pem")
    shutil.copy(pki / "ca.key", tmp_path / "ca.key")
    files: TlsFiles = issue_node(tmp_path, init_ca(tmp_path), "stranger", "visitor")
    stub = coordinator_pb2_grpc.CoordinatorStub(make_channel(f"127.0.0.1:{coordinator.port}", files))
    code, details = code_of(lambda: stub.ListParties(pb.ListPartiesRequest(), timeout=DEADLINE))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "no fedsuite role" in details

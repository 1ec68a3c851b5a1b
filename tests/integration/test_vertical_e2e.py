"""Vertical logistic regression over real gRPC and mTLS: one guest, two hosts, an arbiter.

Nodes run in this process (real servers on 127.0.0.1) so each node's mailbox can be
watched: the privacy tests assert on what every node actually received, frame by frame.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from fedcore.data import DatasetConfig
from fedcore.crypto.paillier import generate_keypair
from fedcore.federation.codec import FRAME_PREFIX, Kind, encode, key_fingerprint
from fedcore.federation import PeerUnavailable
from fedcore.federation.grpc_transport import GrpcTransport, exchange_chunks
from fedcore.proto import coordinator_pb2 as pb
from fedcore.proto import vertical_pb2, vertical_pb2_grpc
from fedcore.rpc import ChannelPool, Identity, make_channel

from fedsuite.arbiter import Arbiter, ArbiterConfig
from fedsuite.client import CoordinatorAdmin
from fedsuite.coordinator import Coordinator, CoordinatorConfig
from fedsuite.jobfile import JobFileError, parse_job_spec
from fedsuite.party import Party, PartyConfig
from fedsuite.translate import unix
from tests.conftest import tls, tls_config

GUEST, HOSTS = "party-a", ("party-b", "party-c")
ALPHA = 0.01
PARAMS = {"penalty": "L2", "alpha": ALPHA, "optimizer": "nesterov_momentum_sgd", "learning_rate": 0.15,
          "max_iter": 30, "batch_size": 240, "tol": 1e-6, "key_length": 1024, "psi_key_length": 1024, "seed": 7}


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Breast cancer by columns: guest id+label+10 features, each host id+10 features; each side
    lists its rows in its own order and lacks a few of the others' customers."""
    directory = tmp_path_factory.mktemp("vertical")
    data = load_breast_cancer()
    rng = np.random.default_rng(3)
    ids = np.array([f"id{i:04d}" for i in range(len(data.target))])
    columns = {GUEST: range(0, 10), HOSTS[0]: range(10, 20), HOSTS[1]: range(20, 30)}
    present = {}
    for party, cols in columns.items():
        rows = rng.permutation(np.setdiff1d(np.arange(len(ids)), rng.choice(len(ids), 12, replace=False)))
        present[party] = set(rows.tolist())
        with open(directory / f"{party}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *(["y"] if party == GUEST else []), *(f"x{c}" for c in cols)])
            for r in rows:
                writer.writerow([ids[r], *([int(data.target[r])] if party == GUEST else []), *data.data[r, list(cols)]])
    shared = sorted(set.intersection(*present.values()))
    X = StandardScaler().fit_transform(data.data[shared])
    central = LogisticRegression(C=1.0 / (ALPHA * len(shared)), max_iter=10_000).fit(X, data.target[shared])
    return {"dir": directory, "intersection": len(shared),
            "central_auc": roc_auc_score(data.target[shared], central.predict_proba(X)[:, 1])}


@dataclass
class Nodes:
    coordinator: Coordinator
    arbiter: Arbiter
    parties: dict[str, Party]
    received: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)

    def stop(self) -> None:
        for party in self.parties.values():
            party.stop()
        self.arbiter.stop()
        self.coordinator.stop()


def start_party(pki: Path, split: dict[str, object], coordinator: Coordinator, name: str) -> Party:
    directory = split["dir"]
    assert isinstance(directory, Path)
    dataset = DatasetConfig(path=str(directory / f"{name}.csv"), id_column="id", eval_fraction=0,
                            label="y" if name == GUEST else None)
    config = PartyConfig(node_id=name, listen="127.0.0.1:0", tls=tls_config(pki, name), role="guest" if name == GUEST else "host",
                         coordinator=f"127.0.0.1:{coordinator.port}", state_dir=str(directory / "state"),
                         datasets={"breast": dataset})
    party = Party(config, directory)
    assert party.registered.wait(10)
    return party


@pytest.fixture
def nodes(pki: Path, split: dict[str, object], tmp_path: Path) -> Iterator[Nodes]:
    arbiter = Arbiter(ArbiterConfig(node_id="arbiter", listen="127.0.0.1:0", tls=tls_config(pki, "arbiter")), tmp_path)
    coordinator = Coordinator(CoordinatorConfig(
        node_id="coordinator", listen="127.0.0.1:0", tls=tls_config(pki, "coordinator"), state_dir=str(tmp_path / "state"),
        heartbeat_interval_s=0.5, party_timeout_s=3, arbiter=f"127.0.0.1:{arbiter.port}"), tmp_path)
    running = Nodes(coordinator, arbiter, {n: start_party(pki, split, coordinator, n) for n in (GUEST, *HOSTS)})
    for name, mailbox in [("arbiter", arbiter.vertical.mailbox), *((n, p.vertical.mailbox) for n, p in running.parties.items())]:
        running.received[name] = log = []
        original = mailbox.deliver

        def recording(job_id: str, tag: str, src: str, payload: bytes, original=original, log=log) -> None:  # type: ignore[no-untyped-def]
            log.append((tag, src, payload))
            original(job_id, tag, src, payload)

        mailbox.deliver = recording  # type: ignore[method-assign]
    yield running
    running.stop()


def admin(pki: Path, nodes: Nodes) -> CoordinatorAdmin:
    return CoordinatorAdmin(f"127.0.0.1:{nodes.coordinator.port}", tls(pki, "admin"), timeout_s=10)


def train_spec(**params: object) -> pb.JobSpec:
    return parse_job_spec({"name": "hetero", "vertical": {
        "guest": GUEST, "hosts": list(HOSTS), "guest_dataset": "breast", "host_dataset": "breast",
        "step_timeout_s": 20, "params": {**PARAMS, **params}}})


def predict_spec(model_id: str) -> pb.JobSpec:
    return pb.JobSpec(vertical_predict=vertical_pb2.VerticalPredictSpec(
        guest=GUEST, hosts=list(HOSTS), guest_dataset="breast", host_dataset="breast", model_id=model_id))


def kind_of(payload: bytes) -> Kind:
    return Kind(payload[4])


def test_one_guest_two_hosts_match_centralized_and_nodes_receive_only_what_the_protocol_allows(
    pki: Path, split: dict[str, object], nodes: Nodes,
) -> None:
    with admin(pki, nodes) as client:
        job_id = client.submit(train_spec())
        trained = client.wait(job_id, 300)
        assert trained.state == pb.JOB_STATE_SUCCEEDED, trained.reason
        events = list(client.watch(job_id, 10))
        training_log = {name: list(log) for name, log in nodes.received.items()}
        scored = client.wait(client.submit(predict_spec(job_id)), 120)
    assert scored.state == pb.JOB_STATE_SUCCEEDED, scored.reason
    result = trained.vertical_result
    assert result.intersection == split["intersection"]
    assert result.epochs >= 1 and len(result.losses) == result.epochs
    # each epoch's loss was reported live, in order, before the job ended
    epochs = [e for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    assert [e.round for e in epochs] == list(range(1, result.epochs + 1))
    assert [e.metrics.train_loss for e in epochs] == pytest.approx(list(result.losses))
    assert events[-1].type == pb.JOB_EVENT_TYPE_SUCCEEDED and all(unix(e.time) <= unix(events[-1].time) for e in epochs)
    assert scored.vertical_result.n_scored == split["intersection"]
    auc = scored.vertical_result.metrics["auc"]
    assert abs(auc - split["central_auc"]) <= 0.005, (auc, split["central_auc"])

    # The arbiter never receives a plaintext array (no feature, no unmasked gradient): ciphertexts and scalars only.
    arbiter_kinds = {kind_of(p) for _, _, p in training_log["arbiter"]}
    assert arbiter_kinds <= {Kind.ENCRYPTED, Kind.PACKED, Kind.JSON}, arbiter_kinds
    assert {Kind.ENCRYPTED, Kind.PACKED} & arbiter_kinds
    # Hosts never receive a plaintext array either: no label, no plaintext residual.
    for host in HOSTS:
        kinds = {kind_of(p) for _, src, p in training_log[host] if src == GUEST}
        assert Kind.NDARRAY not in kinds and Kind.ENCRYPTED in kinds, kinds
        residuals = [p for tag, src, p in training_log[host] if src == GUEST and tag.endswith("residual")]
        assert residuals and all(kind_of(p) == Kind.ENCRYPTED for p in residuals)
    # The guest receives from hosts nothing in plaintext once the rows are aligned (no host feature or weight)
    # until training ends; then each host's X_h w_h, one array, for the train AUC and KS.
    from_hosts = [(tag, src, p) for tag, src, p in training_log[GUEST] if src in HOSTS and not tag.startswith("psi")]
    epochs_from_hosts = [(tag, p) for tag, _, p in from_hosts if tag != "train.scores"]
    assert epochs_from_hosts and all(kind_of(p) == Kind.ENCRYPTED for _, p in epochs_from_hosts)
    assert sorted((src, kind_of(p)) for tag, src, p in from_hosts if tag == "train.scores") == [
        (host, Kind.NDARRAY) for host in HOSTS]
    assert "auc" in result.metrics and "ks" in result.metrics


def test_host_that_disconnects_mid_training_fails_the_job_fast_and_a_rerun_finishes(
    pki: Path, split: dict[str, object], nodes: Nodes,
) -> None:
    with admin(pki, nodes) as client:
        job_id = client.submit(train_spec(max_iter=200, tol=0.0))
        # wait until training is under way (the guest has received encrypted forwards), then pull the plug
        deadline = time.monotonic() + 60
        while not any(tag.endswith("forward") for tag, _, _ in nodes.received[GUEST]) and time.monotonic() < deadline:
            time.sleep(0.05)
        nodes.parties[HOSTS[1]].stop()
        failed = client.wait(job_id, 60)
        assert failed.state == pb.JOB_STATE_FAILED
        assert HOSTS[1] in failed.reason, failed.reason
        assert unix(failed.updated_at) - unix(failed.created_at) < 45
        # the host comes back; the same job submitted again runs to the end
        nodes.parties[HOSTS[1]] = start_party(pki, split, nodes.coordinator, HOSTS[1])
        # (the rerun uses the default key sizes, 2048-bit Paillier and RSA: the suite's default-size run)
        rerun = client.wait(client.submit(train_spec(max_iter=3, key_length=2048, psi_key_length=2048)), 180)
    assert rerun.state == pb.JOB_STATE_SUCCEEDED, rerun.reason
    assert rerun.vertical_result.epochs == 3


def test_invalid_parameters_are_refused_at_submit_naming_the_field(pki: Path, nodes: Nodes) -> None:
    """On the wire (an enum number the enum lacks, an out-of-range number) and in a job file (a FATE
    spelling that does not exist, refused before anything is sent)."""
    with admin(pki, nodes) as client:
        for params, named in (({"optimizer": 9}, "optimizer"), ({"key_length": 512}, "key_length"),
                              ({"early_stop": 7}, "early_stop"), ({"batch_size": 0}, "batch_size")):
            spec = train_spec()
            for name, value in params.items():
                setattr(spec.vertical.params, name, value)
            with pytest.raises(grpc.RpcError) as caught:
                client.submit(spec)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert f"vertical.params.{named}" in caught.value.details(), caught.value.details()  # type: ignore[attr-defined]
        assert client.list() == []
    for params, named in (({"optimizer": "lbfgs"}, "optimizer"), ({"early_stop": "never"}, "early_stop")):
        with pytest.raises(JobFileError, match=rf"^vertical\.params\.{named}: unknown value"):
            train_spec(**params)


def exchange(pki: Path, sender: str, port: int, chunks: list[vertical_pb2.ExchangeChunk]) -> vertical_pb2.ExchangeAck:
    stub = vertical_pb2_grpc.FederationStub(make_channel(f"127.0.0.1:{port}", tls(pki, sender)))
    return stub.Exchange(iter(chunks), timeout=15)


def test_exchange_refuses_strangers_unknown_jobs_and_malformed_streams(pki: Path, nodes: Nodes) -> None:
    guest_port = nodes.parties[GUEST].port
    payload = encode([1, 2, 3])
    # no job of that id runs on the guest
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[0], guest_port, list(exchange_chunks("nope", "t", payload)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    # an admin is no federation member at all
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, "admin", guest_port, list(exchange_chunks("nope", "t", payload)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    # a message claiming more bytes than it carries, and one over the size bound
    nodes.parties[GUEST].vertical.active_jobs.open("job-x", frozenset({HOSTS[0]}))  # as RunVertical does for a running job
    short = vertical_pb2.ExchangeChunk(job_id="job-x", tag="t", data=payload, total_bytes=len(payload) + 5)
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[0], guest_port, [short])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    huge = vertical_pb2.ExchangeChunk(job_id="job-x", tag="t", data=b"", total_bytes=1 << 40)
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[0], guest_port, [huge])
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    # a participant who is not this job's (party-c) is refused; the real one is accepted once, then ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[1], guest_port, list(exchange_chunks("job-x", "t", payload)))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert exchange(pki, HOSTS[0], guest_port, list(exchange_chunks("job-x", "t", payload))).messages == 1
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[0], guest_port, list(exchange_chunks("job-x", "t", payload)))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]


def test_a_message_sent_before_its_job_opens_at_the_receiver_is_retried_within_the_step_timeout(
    pki: Path, nodes: Nodes,
) -> None:
    """The receiver refuses a job it has not opened at once (no worker waits for it); the sender retries
    NOT_FOUND within its deadline, so a task that starts a moment late still gets its message."""
    guest = nodes.parties[GUEST]
    channels = ChannelPool(tls(pki, HOSTS[0]), Identity(HOSTS[0], "party"))
    transport = GrpcTransport(channels, {GUEST: f"127.0.0.1:{guest.port}"}, timeout_s=3.0)
    payload = encode([1, 2, 3])
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        exchange(pki, HOSTS[0], guest.port, list(exchange_chunks("late-job", "t", payload)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() - started < 1.0  # type: ignore[attr-defined]
    opener = threading.Timer(0.5, guest.vertical.active_jobs.open, ("late-job", frozenset({HOSTS[0]})))
    opener.start()
    transport.send("late-job", "t", HOSTS[0], GUEST, payload)
    opener.join()
    assert guest.vertical.mailbox.take("late-job", "t", HOSTS[0], 1.0) == payload
    started = time.monotonic()
    with pytest.raises(PeerUnavailable, match="NOT_FOUND: no vertical job 'never-opened' is open here"):
        transport.send("never-opened", "t", HOSTS[0], GUEST, payload)
    assert 2.0 < time.monotonic() - started < 4.0  # gave up at its deadline, not before and not long after
    channels.close()


def _wrong_key(frame: bytes) -> bytes:
    magic, version, kind, header_len, body_len = FRAME_PREFIX.unpack_from(frame)
    start = FRAME_PREFIX.size
    header = json.loads(frame[start : start + header_len])
    header["key"] = key_fingerprint(generate_keypair(1024)[0])
    text = json.dumps(header, separators=(",", ":")).encode()
    return FRAME_PREFIX.pack(magic, version, kind, len(text), body_len) + text + frame[start + header_len :]


def _over_modulus(frame: bytes) -> bytes:
    header_len = FRAME_PREFIX.unpack_from(frame)[3]
    body = FRAME_PREFIX.size + header_len
    return frame[:body] + b"\xff" + frame[body + 1 :]


@pytest.mark.parametrize("tamper, words", [
    (lambda frame: frame[:-10], "truncated"),
    (_wrong_key, "another public key"),
    (_over_modulus, "bad ciphertexts"),
])
def test_tampered_or_foreign_ciphertexts_fail_the_job_cleanly(pki: Path, nodes: Nodes, tamper, words: str) -> None:  # type: ignore[no-untyped-def]
    """A host's encrypted forward altered on the way: the guest refuses it with INVALID_ARGUMENT naming the
    sender and the step, the job fails with that reason, and the guest goes on serving the next job."""
    guest = nodes.parties[GUEST].vertical.mailbox
    honest = guest.deliver
    tampered: list[str] = []

    def deliver(job_id: str, tag: str, src: str, payload: bytes) -> None:
        if src == HOSTS[0] and tag.endswith("forward") and not tampered:
            tampered.append(tag)
            payload = tamper(payload)
        honest(job_id, tag, src, payload)

    guest.deliver = deliver  # type: ignore[method-assign]
    with admin(pki, nodes) as client:
        failed = client.wait(client.submit(train_spec(max_iter=3)), 120)
        guest.deliver = honest  # type: ignore[method-assign]
        assert tampered
        assert failed.state == pb.JOB_STATE_FAILED
        assert f"{GUEST} (guest): INVALID_ARGUMENT" in failed.reason and HOSTS[0] in failed.reason, failed.reason
        assert words in failed.reason, failed.reason
        again = client.wait(client.submit(train_spec(max_iter=2)), 120)
    assert again.state == pb.JOB_STATE_SUCCEEDED, again.reason


def test_cancelling_a_vertical_job_stops_every_node(pki: Path, nodes: Nodes) -> None:
    with admin(pki, nodes) as client:
        job_id = client.submit(train_spec(max_iter=500, tol=0.0))
        for event in client.watch(job_id, 120):
            if event.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED:
                break
        cancelled = client.cancel(job_id)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        endpoints = [nodes.arbiter.vertical, *(p.vertical for p in nodes.parties.values())]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(e.active_jobs.running() for e in endpoints):
            time.sleep(0.1)
        assert not any(e.active_jobs.running() for e in endpoints)  # every node let go of the job
        again = client.wait(client.submit(train_spec(max_iter=2)), 120)
        assert client.get(job_id).state == pb.JOB_STATE_CANCELLED
    assert again.state == pb.JOB_STATE_SUCCEEDED, again.reason

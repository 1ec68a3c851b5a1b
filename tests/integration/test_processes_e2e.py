"""End to end: coordinator, arbiter and parties as separate processes over mTLS on 127.0.0.1 (crashes included)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import (
    GUEST, HOST, PARTIES, VERTICAL_PARAMS, centralized_baseline, horizontal_job, prepare_vertical_data, score_global_model,
)
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from fedsuite.translate import duration
from tests.conftest import breast_dataset

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def start_parties(federation: LocalFederation, breast_dir: Path, parties: tuple[str, ...] = PARTIES) -> None:
    for party in parties:
        federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
    federation.wait_for_parties(list(parties))


def job(rounds: int, min_parties: int = 3, timeout_s: float = 30, retries: int = 2, epochs: int = 2) -> pb.JobSpec:
    spec = horizontal_job(rounds)
    spec.horizontal.min_parties = min_parties
    spec.horizontal.round_timeout.CopyFrom(duration(timeout_s))
    spec.horizontal.max_round_retries = retries
    spec.horizontal.local_epochs = epochs
    return spec


def wait_for_event(federation: LocalFederation, job_id: str, kind: int, round_number: int) -> None:
    with federation.admin() as admin:
        for event in admin.watch(job_id, timeout_s=120):
            if event.type == kind and event.round >= round_number:
                return
    raise AssertionError(f"job {job_id} ended before event {pb.JobEventType.Name(kind)} of round {round_number}")


def test_three_party_job_matches_centralized_model(federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    federation.start_arbiter()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=20))
        events = list(admin.watch(job_id, timeout_s=180))
        final = admin.get(job_id)
        model = admin.download_model(job_id)
        listed = [j.job_id for j in admin.list()]
        parties = {p.party_id: p for p in admin.parties()}

    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert final.current_round == 20 and [r.round for r in final.rounds] == list(range(1, 21))
    assert job_id in listed
    assert set(parties) >= set(PARTIES) and all(parties[p].online for p in PARTIES)
    # every round averaged the three parties and every party evaluated the new model on its own rows
    last = final.rounds[-1]
    assert sorted(last.parties) == list(PARTIES)
    assert set(last.eval_by_party) == set(PARTIES)
    assert last.eval.n_samples == sum(m.n_samples for m in last.eval_by_party.values())
    # events: started, then per round started + committed, then succeeded
    kinds = [e.type for e in events]
    assert kinds[0] == pb.JOB_EVENT_TYPE_STARTED and kinds[-1] == pb.JOB_EVENT_TYPE_SUCCEEDED
    assert kinds.count(pb.JOB_EVENT_TYPE_ROUND_COMMITTED) == 20
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    # the downloaded global model is as good as scikit-learn's on all the rows (test split)
    data = _pooled(breast_dir)
    federated = score_global_model(model.info, model.weights, data["X_test"], data["y_test"])
    central = centralized_baseline(data)
    assert abs(federated["auc"] - central["auc"]) <= 0.01, (federated, central)
    assert federated["accuracy"] >= 0.93


def _pooled(breast_dir: Path) -> dict[str, np.ndarray]:
    def load(kind: str) -> tuple[np.ndarray, np.ndarray]:
        frames = [np.loadtxt(breast_dir / f"{p}-{kind}.csv", delimiter=",", skiprows=1) for p in PARTIES]
        rows = np.vstack(frames)
        return rows[:, :-1], rows[:, -1].astype(int)

    X_train, y_train = load("train")
    X_test, y_test = load("eval")
    return {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}


def test_metrics_and_json_logs(federation: LocalFederation, breast_dir: Path) -> None:
    coordinator = federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=2))
        assert admin.wait(job_id, 120).state == pb.JOB_STATE_SUCCEEDED
    body = urllib.request.urlopen(f"http://127.0.0.1:{coordinator.metrics_port}/metrics", timeout=5).read().decode()
    for name in ("federated_participant_status", "federated_training_loss", "federated_model_accuracy",
                 "federated_communication_bytes_total", "federated_round_duration_seconds_bucket"):
        assert name in body, name
    assert 'federated_participant_status{participant_id="party-a"} 1.0' in body
    party_body = urllib.request.urlopen(
        f"http://127.0.0.1:{federation.nodes['party-a'].metrics_port}/metrics", timeout=5).read().decode()
    assert 'federated_communication_bytes_total{direction="sent",peer="coordinator"}' in party_body
    # logs are JSON lines, and a job's lines carry its id and round
    lines = [json.loads(l) for l in coordinator.log_path.read_text().splitlines() if l.startswith("{")]
    committed = [l for l in lines if l.get("event") == "round_committed"]
    assert len(committed) == 2 and all(l["job_id"] == job_id and l["round"] in (1, 2) for l in committed)
    party_lines = [json.loads(l) for l in federation.nodes["party-a"].log_path.read_text().splitlines() if l.startswith("{")]
    assert any(l.get("event") == "trained" and l.get("party_id") == "party-a" and l.get("job_id") == job_id for l in party_lines)


def test_silent_party_is_marked_offline(federation: LocalFederation, breast_dir: Path) -> None:
    coordinator = federation.start_coordinator(party_timeout_s=1.5)
    start_parties(federation, breast_dir, ("party-a", "party-b"))
    federation.nodes["party-b"].kill()
    deadline = time.monotonic() + 10
    with federation.admin() as admin:
        while time.monotonic() < deadline and {p.party_id: p.online for p in admin.parties()}["party-b"]:
            time.sleep(0.2)
        status = {p.party_id: p.online for p in admin.parties()}
    assert status == {"party-a": True, "party-b": False}
    time.sleep(1.2)  # the liveness monitor publishes once a second
    body = urllib.request.urlopen(f"http://127.0.0.1:{coordinator.metrics_port}/metrics", timeout=5).read().decode()
    assert 'federated_participant_status{participant_id="party-b"} 0.0' in body


@pytest.mark.parametrize("min_parties, expected", [(2, pb.JOB_STATE_SUCCEEDED), (3, pb.JOB_STATE_FAILED)])
def test_party_killed_mid_round(federation: LocalFederation, breast_dir: Path, min_parties: int, expected: int) -> None:
    federation.start_coordinator(party_timeout_s=2.0)
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=6, min_parties=min_parties, timeout_s=8, retries=1, epochs=40))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_STARTED, 2)
        federation.nodes["party-c"].kill()
        final = admin.wait(job_id, 120)
        events = list(admin.watch(job_id, 10))
    assert final.state == expected, final.reason
    dropped = [e for e in events if e.type == pb.JOB_EVENT_TYPE_PARTY_DROPPED]
    assert dropped and all(e.party_id == "party-c" for e in dropped)
    if expected == pb.JOB_STATE_SUCCEEDED:
        assert final.current_round == 6
        assert all("party-c" not in r.parties for r in final.rounds[2:])
    else:
        assert "min_parties=3" in final.reason and "party-c" in final.reason, final.reason
        assert final.current_round <= 2


def test_coordinator_killed_mid_job_resumes_without_losing_or_repeating_rounds(
    federation: LocalFederation, breast_dir: Path,
) -> None:
    federation.start_coordinator()
    start_parties(federation, breast_dir)
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=8, epochs=10))
    wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 3)
    federation.nodes["coordinator"].kill()
    federation.restart("coordinator")
    with federation.admin() as admin:
        final = admin.wait(job_id, 180)
        events = list(admin.watch(job_id, 10))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert [r.round for r in final.rounds] == list(range(1, 9))
    committed = [e.round for e in events if e.type == pb.JOB_EVENT_TYPE_ROUND_COMMITTED]
    assert committed == list(range(1, 9))
    resumed = [e for e in events if e.type == pb.JOB_EVENT_TYPE_STARTED]
    assert len(resumed) == 2 and resumed[1].message.startswith("resuming after round")


def test_sigterm_stops_every_service_cleanly(federation: LocalFederation, breast_dir: Path) -> None:
    federation.start_coordinator()
    federation.start_arbiter()
    start_parties(federation, breast_dir, ("party-a",))
    for node in list(federation.nodes.values()):
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(15) == 0, federation.log_tail(node.name)
        assert time.monotonic() - started < 10


def start_vertical(federation: LocalFederation, epochs: int) -> pb.JobSpec:
    """Arbiter, coordinator, guest and host of the demo's vertical split; a training job of ``epochs`` for them."""
    prepare_vertical_data(federation.workdir / "data")
    federation.start_arbiter()
    federation.start_coordinator()
    federation.start_party(GUEST, {"g": {"path": f"data/{GUEST}.csv", "label": "target", "id_column": "id",
                                         "eval_fraction": 0}})
    federation.start_party(HOST, {"h": {"path": f"data/{HOST}.csv", "id_column": "id", "eval_fraction": 0}}, role="host")
    federation.wait_for_parties([GUEST, HOST])
    return parse_job_spec({"vertical": {"guest": GUEST, "hosts": [HOST], "guest_dataset": "g", "host_dataset": "h",
                                        "step_timeout_s": 20, "params": {**VERTICAL_PARAMS, "max_iter": epochs, "tol": 0.0}}})


def test_vertical_job_survives_a_coordinator_crash(federation: LocalFederation, tmp_path: Path) -> None:
    """A coordinator SIGKILLed mid vertical training: the nodes' calls are cancelled, and the restarted
    coordinator runs the job again from the start (fresh exchange id, no stale message) to the end."""
    spec = start_vertical(federation, epochs=40)
    with federation.admin() as admin:
        job_id = admin.submit(spec)
    wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 3)
    federation.nodes["coordinator"].kill()
    federation.restart("coordinator")
    with federation.admin() as admin:
        final = admin.wait(job_id, 300)
        events = list(admin.watch(job_id, 10))
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    assert final.vertical_result.epochs == 40 and final.vertical_result.intersection == 529
    assert sum(e.type == pb.JOB_EVENT_TYPE_STARTED for e in events) == 2

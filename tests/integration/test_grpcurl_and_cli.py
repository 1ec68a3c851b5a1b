"""grpcurl (a real Go client, over mTLS, via reflection) and the fedsuite CLI against live services."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsuite.demo import PARTIES
from fedsuite.local import LocalFederation
from tests.conftest import NODES, breast_dataset

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
SERVICES = {"coordinator": "fedsuite.v1.Coordinator", "arbiter": "fedsuite.v1.Arbiter", "party-a": "fedsuite.v1.Party"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, breast_dir: Path) -> Iterator[LocalFederation]:
    federation = LocalFederation(tmp_path_factory.mktemp("federation"))
    federation.init_certs(NODES)
    try:
        federation.start_coordinator()
        federation.start_arbiter()
        for party in PARTIES[:2]:
            federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
        federation.wait_for_parties(list(PARTIES[:2]))
        yield federation
    finally:
        federation.stop_all()


def grpcurl(federation: LocalFederation, node: str, *verb: str, data: str | Path | None = None,
            identity: str | None = "admin", servername: str | None = None) -> subprocess.CompletedProcess[str]:
    """``grpcurl [tls] [-servername NAME] [-d DATA] ADDRESS VERB...`` with a connect timeout and an overall
    deadline; a Path is sent as the README does, ``-d @`` with the file on stdin."""
    certs = federation.certs
    options = ["-connect-timeout", "5", "-max-time", "15", "-cacert", str(certs / "ca.pem")]
    if identity:
        options += ["-cert", str(certs / f"{identity}.pem"), "-key", str(certs / f"{identity}.key")]
    if servername:
        options += ["-servername", servername]
    if data is not None:
        options += ["-d", "@" if isinstance(data, Path) else data]
    command = [GRPCURL, *options, federation.nodes[node].address, *verb]
    stdin = data.read_text() if isinstance(data, Path) else None
    return subprocess.run(command, capture_output=True, text=True, timeout=30, input=stdin)


@pytest.mark.parametrize("node", list(SERVICES))
def test_grpcurl_lists_describes_and_health_checks(running: LocalFederation, node: str) -> None:
    listed = grpcurl(running, node, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICES[node], "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(running, node, "describe", SERVICES[node])
    assert described.returncode == 0, described.stderr
    assert "rpc " in described.stdout and SERVICES[node] in described.stdout
    health = grpcurl(running, node, "grpc.health.v1.Health/Check", data=json.dumps({"service": SERVICES[node]}))
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_grpcurl_describes_the_protos_with_their_comments_and_the_well_known_types(running: LocalFederation) -> None:
    """Reflection serves the descriptor set with source info: describe shows each field's comment (its
    default and unit), and the Timestamp and Duration fields resolve."""
    spec = grpcurl(running, "coordinator", "describe", "fedsuite.v1.HorizontalJobSpec")
    assert spec.returncode == 0, spec.stderr
    assert "// Number of rounds to commit, 1..100000; 0: 10." in spec.stdout
    assert ".google.protobuf.Duration round_timeout = 21;" in spec.stdout
    job = grpcurl(running, "coordinator", "describe", "fedsuite.v1.Job")
    assert job.returncode == 0 and ".google.protobuf.Timestamp created_at = 10;" in job.stdout, job.stderr
    for name in ("google.protobuf.Timestamp", "google.protobuf.Duration", "grpc.health.v1.Health"):
        described = grpcurl(running, "coordinator", "describe", name)
        assert described.returncode == 0 and name.rsplit(".", 1)[1] in described.stdout, described.stderr
    hetero = grpcurl(running, "party-a", "describe", "fedsuite.v1.HeteroLRParams")
    assert hetero.returncode == 0 and ".fedsuite.v1.Optimizer optimizer = 17;" in hetero.stdout, hetero.stderr


def test_health_needs_a_certificate_of_the_federation_but_no_particular_role(running: LocalFederation) -> None:
    """As the protos document it: the handshake refuses a client without a certificate, any role may ask."""
    check = json.dumps({"service": SERVICES["coordinator"]})
    refused = grpcurl(running, "coordinator", "grpc.health.v1.Health/Check", data=check, identity=None)
    assert refused.returncode != 0 and "SERVING" not in refused.stdout
    for identity in ("party-a", "arbiter", "admin"):
        asked = grpcurl(running, "coordinator", "grpc.health.v1.Health/Check", data=check, identity=identity)
        assert asked.returncode == 0 and json.loads(asked.stdout)["status"] == "SERVING", (identity, asked.stderr)


def test_grpcurl_calls_the_api_and_is_refused_without_certificate(running: LocalFederation) -> None:
    reply = grpcurl(running, "coordinator", "fedsuite.v1.Coordinator/ListParties", data="{}")
    assert reply.returncode == 0, reply.stderr
    assert {p["party_id"] for p in json.loads(reply.stdout)["parties"]} == {"party-a", "party-b"}
    refused = grpcurl(running, "coordinator", "fedsuite.v1.Coordinator/ListParties", data="{}", identity=None)
    assert refused.returncode != 0
    denied = grpcurl(running, "coordinator", "fedsuite.v1.Coordinator/ListParties", data="{}", identity="party-a")
    assert denied.returncode != 0 and "PermissionDenied" in denied.stderr


def json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl's output of a server stream: one indented JSON object per message, each opening at column 0."""
    return [json.loads(chunk) for chunk in re.split(r"(?m)^(?=\{$)", text) if chunk.strip()]


def test_grpcurl_recipes_of_the_readme_run_and_cancel_jobs(running: LocalFederation) -> None:
    """The README's daily grpcurl operations, verbatim in substance: submit from JSON, watch, get, list,
    cancel, resume; -servername makes grpcurl check the certificate names the coordinator."""

    def call(method: str, data: str | Path, servername: str = "coordinator") -> subprocess.CompletedProcess[str]:
        return grpcurl(running, "coordinator", f"fedsuite.v1.Coordinator/{method}", data=data, servername=servername)

    job_file = ROOT / "examples" / "clients" / "job-horizontal.json"
    submitted = call("SubmitJob", job_file)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    by_id = json.dumps({"job_id": job_id})
    watched = call("WatchJob", by_id)
    assert watched.returncode == 0, watched.stderr
    events = json_stream(watched.stdout)
    rounds = json.loads(job_file.read_text())["spec"]["horizontal"]["rounds"]
    assert [e["type"] for e in events].count("JOB_EVENT_TYPE_ROUND_COMMITTED") == rounds
    assert events[-1]["type"] == "JOB_EVENT_TYPE_SUCCEEDED"
    assert [e.get("total_rounds") for e in events] == [rounds] * len(events)  # the final ones too
    got = json.loads(call("GetJob", by_id).stdout)
    assert got["state"] == "JOB_STATE_SUCCEEDED" and got["current_round"] == rounds
    assert datetime.fromisoformat(got["created_at"]) <= datetime.fromisoformat(got["updated_at"])  # RFC 3339
    assert got["spec"]["horizontal"]["round_timeout"] == "60s"
    assert job_id in {j["job_id"] for j in json.loads(call("ListJobs", '{"limit": 10}').stdout)["jobs"]}
    for method in ("CancelJob", "ResumeJob"):  # both refuse a job that succeeded
        refused = call(method, by_id)
        assert refused.returncode != 0 and "FailedPrecondition" in refused.stderr and job_id in refused.stderr

    long_job = json.loads(job_file.read_text())
    long_job["spec"]["horizontal"].update(rounds=500, local_epochs=5, model={"type": "MODEL_TYPE_MLP", "hidden_units": [64]})
    running_job = json.loads(call("SubmitJob", json.dumps(long_job)).stdout)["job_id"]
    cancelled = call("CancelJob", json.dumps({"job_id": running_job}))
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "JOB_STATE_CANCELLED"
    impostor = call("ListParties", "{}", servername="party-a")
    assert impostor.returncode != 0 and "party-a" in impostor.stderr


def fedsuite(federation: LocalFederation, *args: str) -> subprocess.CompletedProcess[str]:
    client = ["--coordinator", federation.coordinator_address, "--certs", str(federation.certs)]
    command = [sys.executable, "-m", "fedsuite.cli", *args[:2], *client, *args[2:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=180,
                          env={"COLUMNS": "200", "PATH": str(Path(sys.executable).parent)})


def test_cli_submits_watches_lists_gets_and_cancels(running: LocalFederation, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "name: cli-job\nhorizontal:\n  dataset: breast\n  model: {type: logistic_regression}\n"
        "  rounds: 3\n  penalty: l2\n  alpha: 0.001\n  min_parties: 2\n  batch_size: 16\n"
    )
    submitted = fedsuite(running, "job", "submit", str(job_file), "--watch")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert "round 3" in submitted.stdout and "succeeded" in submitted.stdout
    got = fedsuite(running, "job", "get", job_id, "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["state"] == "JOB_STATE_SUCCEEDED"
    listed = fedsuite(running, "job", "list")
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    saved = fedsuite(running, "job", "download", job_id, str(tmp_path / "model.npz"))
    assert saved.returncode == 0, saved.stderr
    with np.load(tmp_path / "model.npz") as archive:
        info = json.loads(str(archive["info"]))
        assert info["round"] == 3 and info["n_features"] == 30
        assert archive["w0"].shape == (30, 1) and np.isfinite(archive["w0"]).all()
    parties = fedsuite(running, "parties")
    assert "party-a" in parties.stdout and "yes" in parties.stdout
    cancelled = fedsuite(running, "job", "cancel", job_id)
    assert cancelled.returncode == 1 and "FAILED_PRECONDITION" in cancelled.stderr


def test_cli_cancels_a_running_job(running: LocalFederation, tmp_path: Path) -> None:
    job_file = tmp_path / "long.yaml"
    job_file.write_text("horizontal:\n  dataset: breast\n  model: {type: mlp, hidden_units: [64]}\n"
                        "  rounds: 500\n  local_epochs: 5\n  min_parties: 2\n")
    submitted = fedsuite(running, "job", "submit", str(job_file))
    job_id = submitted.stdout.split()[0]
    cancelled = fedsuite(running, "job", "cancel", job_id)
    assert cancelled.returncode == 0 and "CANCELLED" in cancelled.stdout
    watched = fedsuite(running, "job", "watch", job_id)
    assert watched.returncode == 1 and "cancelled" in watched.stdout


def test_cli_refuses_a_bad_job_file_naming_the_key(running: LocalFederation, tmp_path: Path) -> None:
    job_file = tmp_path / "bad.yaml"
    job_file.write_text("horizontal:\n  dataset: breast\n  model: {type: logistic_regression}\n  learning_rat: 0.1\n")
    refused = fedsuite(running, "job", "submit", str(job_file))
    assert refused.returncode == 2 and "learning_rat" in refused.stderr
    job_file.write_text("horizontal:\n  dataset: breast\n  model: {type: logistic_regression}\n  fraction: 2\n")
    refused = fedsuite(running, "job", "submit", str(job_file))
    assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "horizontal.fraction" in refused.stderr


def test_cli_certs_init_writes_ca_and_node_certificates(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "fedsuite.cli", "certs", "init", str(tmp_path / "c"),
                           "--node", "coordinator", "--node", "bank:party"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["admin.key", "admin.pem", "bank.key", "bank.pem", "ca.key", "ca.pem",
                     "coordinator.key", "coordinator.pem"]

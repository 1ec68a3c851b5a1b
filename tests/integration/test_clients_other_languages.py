"""The Node and Ruby clients, written from the protos alone, run a job over mTLS against a real federation.

What each client prints is checked against the coordinator's own record, read through the Python
admin client: the parties, the job it submitted (with the values it set), every event, the end state.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.client import CoordinatorAdmin
from fedsuite.demo import PARTIES
from fedsuite.local import LocalFederation
from tests.integration.test_processes_e2e import start_parties

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "examples" / "clients"
RUBY_LIB = CLIENTS / "ruby" / "lib"
COMMANDS = {
    "node": ["node", str(CLIENTS / "node" / "fedsuite_client.js")],
    "ruby": ["ruby", str(CLIENTS / "ruby" / "fedsuite_client.rb")],
}
INSTALL = "run scripts/test-tools.sh (make test does) to install it"


def require_runtime(language: str) -> None:
    """Fail, never skip, when the client's runtime or libraries are missing."""
    if shutil.which(COMMANDS[language][0]) is None:
        pytest.fail(f"{COMMANDS[language][0]} is not on PATH; {INSTALL}")
    if language == "node" and not (CLIENTS / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"examples/clients/node/node_modules has no @grpc/grpc-js; {INSTALL}")
    if language == "ruby":
        probe = subprocess.run(["ruby", "-e", 'require "grpc"'], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            pytest.fail(f"Ruby cannot require grpc (Debian's ruby-grpc); {INSTALL}")


def client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any FEDSUITE_* setting of ours, plus ``extra``."""
    return {**{key: value for key, value in os.environ.items() if not key.startswith("FEDSUITE_")}, **(extra or {})}


def run_client(language: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The client as a subprocess, bounded: its own calls have deadlines, the process a timeout."""
    return subprocess.run([*COMMANDS[language], *args], capture_output=True, text=True, timeout=120,
                          env=client_env(env), cwd=ROOT)


def tls_args(federation: LocalFederation) -> list[str]:
    certs = federation.certs
    return ["--coordinator", federation.coordinator_address, "--ca", str(certs / "ca.pem"),
            "--cert", str(certs / "admin.pem"), "--key", str(certs / "admin.key")]


def printed(stdout: str, kind: str) -> list[list[str]]:
    """The client's lines starting with ``kind``, split into words."""
    return [line.split() for line in stdout.splitlines() if line.startswith(f"{kind} ")]


@pytest.mark.parametrize("language", sorted(COMMANDS))
def test_client_runs_a_job_to_success_and_reports_refusals(
        language: str, federation: LocalFederation, breast_dir: Path) -> None:
    require_runtime(language)
    federation.start_coordinator()
    start_parties(federation, breast_dir, PARTIES[:2])
    name = f"{language}-client-test"
    ran = run_client(language, *tls_args(federation), "--rounds", "2", "--name", name)
    assert ran.returncode == 0, ran.stderr + ran.stdout

    with federation.admin() as admin:
        parties = admin.parties()
        [[_, job_id]] = printed(ran.stdout, "submitted")
        job = admin.get(job_id)
        events = list(admin.watch(job_id, timeout_s=30))
    assert printed(ran.stdout, "party") == [
        ["party", p.party_id, common_pb2.PartyRole.Name(p.role), f"online={str(p.online).lower()}",
         "datasets=" + ",".join(d.name for d in p.datasets)] for p in parties
    ]
    assert {p.party_id for p in parties} == set(PARTIES[:2])
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.current_round == 2 and job.spec.name == name
    spec = job.spec.horizontal  # every field the client set arrived under its proto name
    assert (spec.dataset, spec.model.type, spec.rounds, spec.local_epochs, spec.batch_size) == (
        "breast", pb.MODEL_TYPE_LOGISTIC_REGRESSION, 2, 1, 16)
    assert (spec.learning_rate, spec.penalty, spec.alpha, spec.min_parties, spec.fraction, spec.seed) == (
        0.05, common_pb2.PENALTY_L2, 0.001, 2, 1.0, 42)
    assert [words[1:3] for words in printed(ran.stdout, "event")] == [
        [str(e.sequence), pb.JobEventType.Name(e.type)] for e in events
    ]
    assert events[-1].type == pb.JOB_EVENT_TYPE_SUCCEEDED
    [[*final, took]] = printed(ran.stdout, "job")
    assert final == ["job", job_id, "JOB_STATE_SUCCEEDED", "rounds=2"]
    elapsed = job.updated_at.ToDatetime() - job.created_at.ToDatetime()  # the client decoded both Timestamps
    assert took.startswith("seconds=") and abs(float(took.removeprefix("seconds=")) - elapsed.total_seconds()) < 0.001

    # The same client configured from the environment, naming a dataset no party declares, or with too many
    # rounds: refused at once, nothing created.
    certs = federation.certs
    env = {"FEDSUITE_COORDINATOR": federation.coordinator_address, "FEDSUITE_CA": str(certs / "ca.pem"),
           "FEDSUITE_CERT": str(certs / "admin.pem"), "FEDSUITE_KEY": str(certs / "admin.key")}
    refused = run_client(language, "--dataset", "no-such-dataset", env=env)
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert refused.stderr.startswith("error: FAILED_PRECONDITION: ") and "'no-such-dataset'" in refused.stderr
    assert len(printed(refused.stdout, "party")) == 2 and not printed(refused.stdout, "submitted")
    invalid = run_client(language, *tls_args(federation), "--rounds", "100001")
    assert invalid.returncode == 1, invalid.stdout
    assert invalid.stderr.startswith("error: INVALID_ARGUMENT: ") and "horizontal.rounds" in invalid.stderr
    with federation.admin() as admin:
        assert [j.job_id for j in admin.list()] == [job_id]

    # A job that ends other than SUCCEEDED (cancelled by another admin while the client watches): exit 1.
    watching = subprocess.Popen([*COMMANDS[language], *tls_args(federation), "--rounds", "100000"], cwd=ROOT,
                                env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with federation.admin() as admin:
            cancelled_id = admin.cancel(wait_for_new_job(admin, known={job_id})).job_id
            out, err = watching.communicate(timeout=60)
            cancelled = admin.get(cancelled_id)
    finally:
        watching.kill()
    assert watching.returncode == 1, out + err
    assert err.strip() == f"error: job {cancelled.job_id} ended JOB_STATE_CANCELLED: {cancelled.reason}"
    assert [words[:4] for words in printed(out, "job")] == [
        ["job", cancelled.job_id, "JOB_STATE_CANCELLED", f"rounds={cancelled.current_round}"]]


def wait_for_new_job(admin: CoordinatorAdmin, known: set[str], timeout_s: float = 30) -> str:
    """The id of the first job not in ``known`` to appear on the coordinator."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = [j.job_id for j in admin.list() if j.job_id not in known]
        if new:
            return new[0]
        time.sleep(0.05)
    raise AssertionError(f"no new job on the coordinator within {timeout_s} s")


@pytest.mark.parametrize("language", sorted(COMMANDS))
def test_client_without_coordinator_certificate_name_is_refused(
        language: str, federation: LocalFederation) -> None:
    """The clients check the server's certificate names the coordinator, not just any federation member."""
    require_runtime(language)
    federation.start_coordinator()
    wrong = run_client(language, *tls_args(federation), "--server-name", "party-a", "--timeout", "3")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: UNAVAILABLE: "), wrong.stderr
    assert "party-a" in wrong.stderr and not printed(wrong.stdout, "party")


def test_ruby_generated_code_matches_the_protos(tmp_path: Path) -> None:
    """lib/ is what generate.sh makes from the committed protos (rerun it after changing them)."""
    require_runtime("ruby")
    if shutil.which("grpc_tools_ruby_protoc") is None:
        pytest.fail(f"grpc_tools_ruby_protoc (Debian's ruby-grpc-tools) is not on PATH; {INSTALL}")
    made = subprocess.run([str(CLIENTS / "ruby" / "generate.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.rb"))
    committed = sorted(p.relative_to(RUBY_LIB) for p in RUBY_LIB.rglob("*.rb"))
    assert fresh == committed, "examples/clients/ruby/lib is stale: run make protos (examples/clients/ruby/generate.sh)"
    assert fresh, "generate.sh made no Ruby code"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, RUBY_LIB / p, shallow=False)]
    assert not stale, f"examples/clients/ruby/lib is stale ({', '.join(stale)}): run make protos (examples/clients/ruby/generate.sh)"

"""A newcomer's CLI mistakes get a sentence, never a traceback, through the real `fedsuite` process:
Ctrl-C of `job watch` (the job keeps running), a port already in use, a directory given as a job file."""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import PARTIES
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from tests.conftest import breast_dataset, tls_config


def read_line(stream: object, timeout_s: float) -> str:
    """One line of a child's pipe, or "" if none comes within ``timeout_s``."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        return stream.readline() if selector.select(timeout_s) else ""  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [["job", "watch"], ["job", "submit", "--watch"]])
def test_ctrl_c_stops_watching_not_the_job(federation: LocalFederation, breast_dir: Path, tmp_path: Path,
                                           command: list[str]) -> None:
    federation.start_coordinator()
    for party in PARTIES[:2]:
        federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
    federation.wait_for_parties(list(PARTIES[:2]))
    long_job = {"horizontal": {"dataset": "breast", "model": {"type": "mlp", "hidden_units": [64]},
                               "rounds": 500, "local_epochs": 5, "min_parties": 2}}
    client = ["--coordinator", federation.coordinator_address, "--certs", str(federation.certs)]
    with federation.admin() as admin:
        if command == ["job", "watch"]:
            job_id = admin.submit(parse_job_spec(long_job))
            argv = [*command, *client, job_id]
        else:
            (tmp_path / "long.yaml").write_text(yaml.safe_dump(long_job))
            argv = [*command, *client, str(tmp_path / "long.yaml")]
        watcher = subprocess.Popen([sys.executable, "-m", "fedsuite.cli", *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            first = read_line(watcher.stderr, 30)
            assert first.startswith("fedsuite: watching job "), first
            job_id = first.removeprefix("fedsuite: watching job ").split(";")[0]
            watcher.send_signal(signal.SIGINT)
            out, err = watcher.communicate(timeout=15)
        finally:
            watcher.kill()
            watcher.wait(10)
        assert watcher.returncode == 130, err
        assert err.strip() == (f"fedsuite: stopped watching; job {job_id} keeps running on the coordinator "
                               f"(re-attach with `fedsuite job watch {job_id}`).")
        assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
        job = admin.get(job_id)
        assert job.state == pb.JOB_STATE_RUNNING, pb.JobState.Name(job.state)
        admin.cancel(job_id)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("setting", ["listen", "metrics_listen"])
def test_a_port_in_use_names_the_address_and_the_setting(pki: Path, tmp_path: Path, busy_port: int,
                                                         setting: str) -> None:
    config = {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "state_dir": str(tmp_path / "state"),
              "tls": vars(tls_config(pki, "coordinator")), setting: f"127.0.0.1:{busy_port}"}
    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump(config))
    started = subprocess.run([sys.executable, "-m", "fedsuite.cli", "coordinator", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert (f"fedsuite: cannot listen on 127.0.0.1:{busy_port} (`{setting}` in {path}): address already in use"
            in started.stderr.splitlines())
    assert "Traceback" not in started.stderr + started.stdout


def test_a_directory_as_job_file_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    submitted = subprocess.run([sys.executable, "-m", "fedsuite.cli", "job", "submit", str(tmp_path / "jobs")],
                               capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 2
    assert submitted.stderr == f"fedsuite: {tmp_path / 'jobs'}: is a directory\n"
    assert submitted.stdout == ""


def test_a_coordinator_id_its_certificate_does_not_name_is_one_sentence(federation: LocalFederation) -> None:
    """The CLI checks the server is the coordinator by name; a wrong --coordinator-id says so, not 'failed to connect'."""
    federation.start_coordinator()
    client = ["--coordinator", federation.coordinator_address, "--certs", str(federation.certs), "--timeout", "3"]
    right = subprocess.run([sys.executable, "-m", "fedsuite.cli", "parties", *client], capture_output=True, text=True,
                           timeout=30)
    wrong = subprocess.run([sys.executable, "-m", "fedsuite.cli", "parties", *client, "--coordinator-id", "party-a"],
                           capture_output=True, text=True, timeout=30)
    assert right.returncode == 0, right.stderr
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "fails verification" in wrong.stderr and "--coordinator-id party-a" in wrong.stderr, wrong.stderr

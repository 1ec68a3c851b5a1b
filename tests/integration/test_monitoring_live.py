"""The alerts and the dashboard name only metrics and labels that running services export.

A real coordinator and two parties (separate processes, mTLS) run a short horizontal job; every
node's /metrics is scraped while it runs and after it ended. Then each PromQL expression of
docker/prometheus-rules.yml and of the dashboard is parsed (promql-parser) and must select only
exported metrics, name only their labels (in matchers, by/on clauses and in the annotations' and
legends' templates), or labels Prometheus adds itself (instance, job).

The same run has a real Prometheus (Debian's, from scripts/test-tools.sh) scrape the nodes with
docker/prometheus.yml and the rules file: every dashboard query must succeed and return data (the
privacy budget's excepted), and a party killed mid-test must make ParticipantOffline pending for
that participant, with its summary rendered from the real labels.

A metric family that has no sample yet counts as exported when its # HELP/# TYPE lines are there,
its labels being the ones telemetry.py declares for it. That covers the privacy budget gauges: they
are defined with job_id but no job sets them until differential privacy arrives (a later issue),
so PrivacyBudgetExhausted and the budget panel are checked against that declaration, not a sample.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from fedcore import telemetry
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.local import LocalFederation, NodeProcess, free_port
from tests.integration.test_processes_e2e import job, start_parties, wait_for_event
from tests.monitoring import (
    ROOT, RULES, SCRAPE_LABELS, Query, dashboard_queries, result_labels, rule_queries, sample_types, uses,
)

SCRAPE_TIMEOUT_S = 5.0
PARTIES = ("party-a", "party-b")
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus.yml"
PROMETHEUS_START_TIMEOUT_S = 30.0
PROMETHEUS_WAIT_S = 30.0
"""How long Prometheus may take to see what a node just exported (1 s scrapes and evaluations here)."""
QUERY_TIMEOUT_S = 5.0

Exported = dict[str, frozenset[str]]
"""Series name -> the label names it is exported with."""


def scrape(node: NodeProcess) -> str:
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
        return reply.read().decode()  # type: ignore[no-any-return]


def scrape_showing(node: NodeProcess, text: str) -> str | None:
    """The node's /metrics if it contains ``text``."""
    body = scrape(node)
    return body if text in body else None


def exported(bodies: list[str]) -> Exported:
    """What the scraped bodies export: each sample's labels, and for a family seen without any
    sample its series names with the labels telemetry.py declares (histogram buckets add le)."""
    labels: dict[str, set[str]] = {}
    empty: list[tuple[str, str]] = []
    for body in bodies:
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
            if not family.samples:
                empty.append((family.name, family.type))
    # prometheus_client keeps the declared label names only privately; there is no public accessor.
    declared = {m.name: set(v._labelnames) for v in vars(telemetry).values() if isinstance(v, MetricWrapperBase)
                for m in v.describe()}
    for family, kind in empty:
        for series in sample_types([(family, kind)]):
            if series not in labels:
                labels[series] = declared.get(family, set()) | ({"le"} if series.endswith("_bucket") else set())
    return {name: frozenset(names) for name, names in labels.items()}


def problems(queries: list[Query], metrics: Exported) -> list[str]:
    """One sentence per metric or label a query names that no service exports."""
    out = []
    for query in queries:
        found = uses(query.expr)
        missing = sorted({name for name, _ in found.selectors if name not in metrics})
        out += [f"{query.where}: metric {name} is not exported by any service" for name in missing]
        if missing:
            continue
        for name, labels in found.selectors:
            if unknown := labels - metrics[name] - SCRAPE_LABELS:
                out.append(f"{query.where}: {name} has no label {', '.join(sorted(unknown))}")
        for labels, below in found.groupings:
            available = frozenset().union(*(metrics[m] for m in below)) | SCRAPE_LABELS
            if unknown := labels - available:
                out.append(f"{query.where}: groups by {', '.join(sorted(unknown))}, not a label of {', '.join(sorted(below))}")
        if unknown := set(query.template_labels) - result_labels(query.expr, metrics):
            out.append(f"{query.where}: its template names {', '.join(sorted(unknown))}, not a label of its result")
    return out


@contextmanager
def real_prometheus(workdir: Path, metrics_ports: dict[str, int]) -> Iterator[str]:
    """Prometheus with docker/prometheus.yml, its targets (compose service names) mapped to these
    nodes' metrics ports and the others dropped, the rules file, and 1 s intervals. Yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus binary is not installed: run scripts/test-tools.sh (Debian's prometheus package)")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    for scrape_config in config["scrape_configs"]:
        for group in scrape_config["static_configs"]:
            names = [target.rpartition(":")[0] for target in group["targets"]]
            group["targets"] = [f"127.0.0.1:{metrics_ports[n]}" for n in names if n in metrics_ports]
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _until(lambda: _ready(url), PROMETHEUS_START_TIMEOUT_S, "Prometheus ready", workdir / "prometheus.log")
        # Prometheus applies its targets a few seconds after start: from here on it sees what happens.
        _until(lambda: len(query(url, "up == 1")) == len(metrics_ports), PROMETHEUS_START_TIMEOUT_S,
               "scrape of every node", workdir / "prometheus.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=QUERY_TIMEOUT_S) as reply:
            return reply.status == 200
    except OSError:
        return False


def _until(check: Any, timeout_s: float, what: str, log: Path | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-2000:] if log else ""
    pytest.fail(f"no {what} after {timeout_s} s\n{tail}")


def api(url: str, path: str, **params: str) -> Any:
    """A Prometheus HTTP API call's data; a query Prometheus refuses fails the test with its error."""
    request = f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(request, timeout=QUERY_TIMEOUT_S) as reply:
            body = json.load(reply)
    except urllib.error.HTTPError as err:
        body = json.load(err)
    assert body["status"] == "success", f"{params}: {body.get('error')}"
    return body["data"]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    return api(url, "query", query=expr)["result"]  # type: ignore[no-any-return]


def pending(url: str, alert: str, **labels: str) -> dict[str, Any] | None:
    """The alert with these labels, if Prometheus has it pending or firing."""
    for found in api(url, "alerts")["alerts"]:
        if found["labels"].get("alertname") == alert and labels.items() <= found["labels"].items():
            return found  # type: ignore[no-any-return]
    return None


def test_rules_and_dashboard_name_only_what_the_services_export(federation: LocalFederation, breast_dir: Path) -> None:
    coordinator = federation.start_coordinator(party_timeout_s=1.5)  # the killed party is offline soon
    start_parties(federation, breast_dir, PARTIES)
    nodes = [coordinator, *(federation.nodes[p] for p in PARTIES)]
    with real_prometheus(federation.workdir / "prometheus", {n.name: n.metrics_port for n in nodes}) as prometheus:
        with federation.admin() as admin:
            job_id = admin.submit(job(rounds=3, min_parties=2))
            wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 1)
            # the round's event is out just before the coordinator sets the round's gauges
            loss = f'federated_training_loss{{job_id="{job_id}"}}'
            during = [_until(lambda: scrape_showing(coordinator, loss), SCRAPE_TIMEOUT_S, "round 1's loss on /metrics"),
                      *(scrape(node) for node in nodes[1:])]
            final = admin.wait(job_id, 120)
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
        after = [scrape(node) for node in nodes]
        check_in_prometheus(prometheus, federation)
    assert f'federated_global_model_accuracy{{job_id="{job_id}"}}' in after[0]
    assert 'federated_jobs_total{state="succeeded"} 1.0' in after[0]
    metrics = exported(during + after)

    queries = [*rule_queries(), *dashboard_queries()]
    assert problems(queries, metrics) == []

    # The same check on expressions that name what nobody exports: it does say so.
    wrong = [Query("unknown metric", "federated_tenant_quota > 1"),
             Query("unknown matcher", 'federated_training_loss{participant_id="party-a"}'),
             Query("unknown grouping", "sum by (tenant) (federated_model_accuracy)"),
             Query("unknown template", "max by (job_id) (federated_training_loss)", ("participant_id",))]
    assert problems(wrong, metrics) == [
        "unknown metric: metric federated_tenant_quota is not exported by any service",
        "unknown matcher: federated_training_loss has no label participant_id",
        "unknown grouping: groups by tenant, not a label of federated_model_accuracy",
        "unknown template: its template names participant_id, not a label of its result",
    ]


def check_in_prometheus(url: str, federation: LocalFederation) -> None:
    """Every dashboard query answers with data once Prometheus saw the job end (the privacy budget's
    excepted: no job sets it yet); a killed party makes ParticipantOffline pending for it."""
    budget = [q for q in dashboard_queries() if "federated_privacy_budget" in q.expr]
    others = [q for q in dashboard_queries() if q not in budget]
    assert budget and all(not query(url, q.expr) for q in budget), "a job sets the privacy budget now: check its data"
    deadline, empty = time.monotonic() + PROMETHEUS_WAIT_S, others
    while empty and time.monotonic() < deadline:
        time.sleep(0.5)  # a rate() needs two samples of a series born in the job
        empty = [q for q in others if not query(url, q.expr)]
    assert [q.where for q in empty] == [], "dashboard queries without data"
    assert query(url, 'sum(increase(federated_jobs_total{state="succeeded"}[5m])) > 0.5'), "the job counted once"
    assert pending(url, "ParticipantOffline") is None
    federation.nodes["party-b"].kill()
    alert = _until(lambda: pending(url, "ParticipantOffline", participant_id="party-b"), PROMETHEUS_WAIT_S,
                   "ParticipantOffline for party-b")
    assert alert["state"] == "pending", "its 5 minutes have not passed"
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == "Participant party-b is offline"

"""The alerts and the dashboard name only metrics and labels that running services export.

A real coordinator and two parties (separate processes, mTLS) run a short horizontal job; every
node's /metrics is scraped while it runs and after it ended. Then each PromQL expression of
docker/prometheus-rules.yml and of the dashboard is parsed (promql-parser) and must select only
exported metrics, name only their labels (in matchers, by/on clauses and in the annotations' and
legends' templates), or labels Prometheus adds itself (instance, job).

A metric family that has no sample yet counts as exported when its # HELP/# TYPE lines are there,
its labels being the ones telemetry.py declares for it. That covers the privacy budget gauges: they
are defined with job_id but no job sets them until differential privacy arrives (a later issue),
so PrivacyBudgetExhausted and the budget panel are checked against that declaration, not a sample.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from fedcore import telemetry
from fedcore.proto import coordinator_pb2 as pb

from fedsuite.local import LocalFederation, NodeProcess
from tests.integration.test_processes_e2e import job, start_parties, wait_for_event
from tests.monitoring import SCRAPE_LABELS, Query, dashboard_queries, result_labels, rule_queries, sample_types, uses

SCRAPE_TIMEOUT_S = 5.0
PARTIES = ("party-a", "party-b")

Exported = dict[str, frozenset[str]]
"""Series name -> the label names it is exported with."""


def scrape(node: NodeProcess) -> str:
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
        return reply.read().decode()  # type: ignore[no-any-return]


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
    for family, _kind in empty:
        for series in sample_types([(family, _kind)]):
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


def test_rules_and_dashboard_name_only_what_the_services_export(federation: LocalFederation, breast_dir: Path) -> None:
    coordinator = federation.start_coordinator()
    start_parties(federation, breast_dir, PARTIES)
    nodes = [coordinator, *(federation.nodes[p] for p in PARTIES)]
    with federation.admin() as admin:
        job_id = admin.submit(job(rounds=3, min_parties=2))
        wait_for_event(federation, job_id, pb.JOB_EVENT_TYPE_ROUND_COMMITTED, 1)
        during = [scrape(node) for node in nodes]
        final = admin.wait(job_id, 120)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.reason
    after = [scrape(node) for node in nodes]
    assert f'federated_training_loss{{job_id="{job_id}"}}' in during[0], "the scrape during the job saw its loss"
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

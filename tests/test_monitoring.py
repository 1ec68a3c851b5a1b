"""fedsuite's alerts and dashboard, checked with the real tools: promtool (rules, their unit tests,
every PromQL expression, the compose Prometheus config) and kubectl kustomize (k8s/monitoring/).

promtool comes from Debian's prometheus package (scripts/test-tools.d/promtool.sh); missing, the
tests fail and say so. That the expressions name metrics and labels the services really export is
tests/integration/test_monitoring_live.py's job.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from fedcore import telemetry
from scripts.gen_prometheus_rule import PROMETHEUS_RULE, render
from tests.monitoring import (
    DASHBOARD, ROOT, RULE_TESTS, RULES, Query, dashboard, dashboard_queries, rule_queries, run_promtool, sample_types,
    uses,
)

COMPOSE = ROOT / "docker-compose.yml"
KUBECTL_TIMEOUT_S = 30

ALERTS = {
    "ParticipantOffline": ("5m", "critical"),
    "TrainingConvergenceSlow": ("1h", "warning"),
    "PrivacyBudgetExhausted": ("10m", "warning"),
    "ModelPerformanceDivergence": ("15m", "warning"),
}
"""The issue's four alerts: how long each condition must hold, and its severity."""

COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
GAUGE_FUNCTIONS = {"deriv", "delta", "idelta", "predict_linear"}


def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())  # type: ignore[no-any-return]


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A compose service's bind mounts from the repository: container path -> repository path."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def in_container(service: dict[str, Any], path: str) -> Path:
    """The repository file a container sees at ``path`` through the service's bind mounts."""
    for target, source in mounts(service).items():
        if path == target or path.startswith(target + "/"):
            return source / path[len(target):].lstrip("/") if path != target else source
    pytest.fail(f"{path} is not mounted from the repository into the container")


# -- the rules and their unit tests --------------------------------------------------------------
def test_the_four_alerts_as_specified() -> None:
    alerts = {r["alert"]: r for g in rules()["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == set(ALERTS)
    for name, (duration, severity) in ALERTS.items():
        assert (alerts[name]["for"], alerts[name]["labels"]["severity"]) == (duration, severity), name
        assert {"summary", "description"} <= set(alerts[name]["annotations"]), name
    assert alerts["ParticipantOffline"]["expr"] == "federated_participant_status == 0"
    assert alerts["PrivacyBudgetExhausted"]["expr"] == (
        "federated_privacy_budget_consumed / federated_privacy_budget_total > 0.9")
    assert "stddev by (job_id)" in alerts["ModelPerformanceDivergence"]["expr"]
    assert "> 0.1" in alerts["ModelPerformanceDivergence"]["expr"]
    assert "deriv(federated_training_loss" in alerts["TrainingConvergenceSlow"]["expr"]


def test_promtool_checks_the_rules_file() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in done.stdout, done.stdout + done.stderr


def test_promtool_unit_tests_fire_and_stay_silent() -> None:
    done = run_promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """promtool compares the whole list of firing alerts at each eval_time, so a check that expects
    one alert also proves the other series beside it stay silent; an empty list proves the `for`."""
    suite = yaml.safe_load(RULE_TESTS.read_text())
    assert suite["rule_files"] == [RULES.name]
    cases: dict[str, set[bool]] = {name: set() for name in ALERTS}
    for test in suite["tests"]:
        for check in test.get("alert_rule_test", []):
            cases[check["alertname"]].add(bool(check["exp_alerts"]))
    assert cases == {name: {True, False} for name in ALERTS}


def test_counters_get_rate_and_gauges_get_deriv() -> None:
    """rate()/increase() read a fall as a counter reset, so they are only for counters (and histogram
    series); deriv()/delta() are for gauges. Types come from telemetry.py's own declarations."""
    families = [(m.name, m.type) for v in vars(telemetry).values() if isinstance(v, MetricWrapperBase)
                for m in v.describe()]
    types = sample_types(families)
    for query in [*rule_queries(), *dashboard_queries()]:
        for function, metrics in uses(query.expr).calls:
            for metric in metrics:
                if function in COUNTER_FUNCTIONS:
                    assert types[metric] in ("counter", "histogram"), f"{query.where}: {function}() over gauge {metric}"
                if function in GAUGE_FUNCTIONS:
                    assert types[metric] == "gauge", f"{query.where}: {function}() over {types[metric]} {metric}"


# -- every expression, parsed by promtool -------------------------------------------------------
def check_as_recording_rules(queries: list[Query], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Each expression as a recording rule in a scratch rules file, through `promtool check rules`:
    it parses each with Prometheus' own PromQL parser and names the one it refuses."""
    group = {"name": "expressions", "rules": [{"record": f"fedsuite:check:{n}", "expr": q.expr}
                                             for n, q in enumerate(queries)]}
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    return run_promtool("check", "rules", str(path))


def test_promtool_parses_every_dashboard_and_rule_expression(tmp_path: Path) -> None:
    queries = [*dashboard_queries(), *rule_queries()]
    assert len(queries) > len(ALERTS) + 10
    done = check_as_recording_rules(queries, tmp_path)
    assert done.returncode == 0 and f"SUCCESS: {len(queries)} rules found" in done.stdout, done.stdout + done.stderr


def test_the_expression_check_refuses_bad_promql(tmp_path: Path) -> None:
    done = check_as_recording_rules([Query("bad", "sum by (job_id (federated_training_loss)")], tmp_path)
    assert done.returncode != 0 and "parse error" in done.stdout + done.stderr


# -- the dashboard ------------------------------------------------------------------------------
def test_dashboard_has_the_panels_operators_need() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels), "every panel uses the datasource variable"
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}

    def panel_with(*needles: str) -> str:
        matching = [title for title, text in exprs.items() if all(n in text for n in needles)]
        assert matching, f"no panel queries {needles}"
        return matching[0]

    panel_with("federated_participant_status == 0")  # offline
    panel_with("sum(federated_participant_status)")  # online
    for metric in ("accuracy", "auc"):
        panel_with(f"federated_global_model_{metric}", f"federated_model_{metric}", "participant_id")
    panel_with("federated_training_loss", "by (job_id)")
    panel_with("histogram_quantile(0.9", "rate(federated_round_duration_seconds_bucket", "le")
    panel_with("rate(federated_communication_bytes_total", "peer")
    panel_with("increase(federated_jobs_total")
    panel_with("increase(federated_rounds_total")
    budget = panel_with("federated_privacy_budget_consumed", "/ federated_privacy_budget_total")
    assert next(p for p in panels if p["title"] == budget)["type"] == "gauge"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


# -- compose ------------------------------------------------------------------------------------
def test_compose_prometheus_loads_the_rules_file(tmp_path: Path) -> None:
    """docker/prometheus.yml's rule_files resolve, through the compose mounts, to docker/prometheus-rules.yml;
    `promtool check config` checks the config and the rules it loads (paths mapped to the repository)."""
    service = compose()["services"]["prometheus"]
    config_path = service["command"][0].removeprefix("--config.file=")
    config = yaml.safe_load(in_container(service, config_path).read_text())
    assert [in_container(service, f) for f in config["rule_files"]] == [RULES]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    done = run_promtool("check", "config", str(local))
    assert done.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in done.stdout, done.stdout + done.stderr


def test_compose_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    assert grafana["profiles"] == ["monitoring"] == services["prometheus"]["profiles"]
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"]), "Grafana listens on loopback only"
    provisioning = in_container(grafana, "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090", "the compose Prometheus, by service name"
    assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "fedsuite.yml").read_text())["providers"]
    assert provider["type"] == "file"
    assert in_container(grafana, provider["options"]["path"]) / DASHBOARD.name == DASHBOARD
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert in_container(grafana, home) == DASHBOARD


# -- Kubernetes ---------------------------------------------------------------------------------
def test_prometheus_rule_is_generated_from_the_rules_file() -> None:
    committed = PROMETHEUS_RULE.read_text()
    assert committed == render(), "k8s/monitoring/prometheus-rule.yaml is stale: run scripts/gen_prometheus_rule.py"
    assert yaml.safe_load(committed)["spec"]["groups"] == rules()["groups"]


def test_k8s_monitoring_renders_the_rules_and_the_dashboard_configmap(kubectl: str) -> None:
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "monitoring")], capture_output=True, text=True,
                          timeout=KUBECTL_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(done.stdout) if d}
    assert set(docs) == {"PrometheusRule", "ConfigMap"}
    rule = docs["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["spec"]["groups"] == rules()["groups"]
    configmap = docs["ConfigMap"]
    assert configmap["data"] == {DASHBOARD.name: DASHBOARD.read_text()}, "the ConfigMap carries the dashboard file as is"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1", "the label Grafana's dashboard sidecar watches"

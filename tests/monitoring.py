"""What fedsuite's alert rules and Grafana dashboard ask of Prometheus, for the tests that check them.

Every PromQL expression comes from the shipped files (docker/prometheus-rules.yml and the dashboard
JSON), never from a copy here. Grafana's own variables ($job, $__rate_interval...) are replaced by
values of the kind Grafana puts there, so the result is plain PromQL that promtool and
promql-parser (a port of Prometheus' parser) accept. :func:`uses` walks the parsed expression for
the metric names and label names it relies on, and the labels its result carries, which is what
tests/integration/test_monitoring_live.py checks against a live scrape.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "docker" / "prometheus-rules.yml"
RULE_TESTS = ROOT / "docker" / "prometheus-rules.test.yml"
DASHBOARD = ROOT / "k8s" / "monitoring" / "dashboards" / "fedsuite.json"
PROMTOOL_TIMEOUT_S = 60

GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "6h", "job": ".*"}
"""What Grafana substitutes for each variable the dashboard uses ($job: the "All" value, a regex)."""

SCRAPE_LABELS = frozenset({"instance", "job"})
"""Labels Prometheus adds to every scraped series itself; the services do not export them."""

_TEMPLATE_LABEL = {"alert": re.compile(r"\$labels\.(\w+)"), "legend": re.compile(r"\{\{\s*(\w+)\s*\}\}")}
_GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)")


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a rule or a dashboard panel, and the labels its text names in templates."""

    where: str
    expr: str
    template_labels: tuple[str, ...] = ()


def rule_queries() -> list[Query]:
    """Every rule's expression; an alert's labels named by ``$labels.x`` in its annotations."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            text = " ".join(str(v) for v in (rule.get("annotations") or {}).values())
            out.append(Query(f"rule {name}", rule["expr"], tuple(_TEMPLATE_LABEL["alert"].findall(text))))
    return out


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_queries() -> list[Query]:
    """Every panel target, with the labels its legend names; a query variable's label_values() as
    its selector and label."""
    out = []
    board = dashboard()
    for panel in board["panels"]:
        for target in panel["targets"]:
            labels = tuple(_TEMPLATE_LABEL["legend"].findall(target.get("legendFormat", "")))
            out.append(Query(f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"]), labels))
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = _LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert found, f"variable {variable['name']}: only label_values(selector, label) queries are checked"
        out.append(Query(f"variable {variable['name']}", grafana_to_promql(found["selector"]), (found["label"],)))
    return out


def grafana_to_promql(expr: str) -> str:
    """``expr`` with Grafana's variables replaced; a variable this module does not know fails the test."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARIABLES, f"unknown Grafana variable ${name} in {expr!r}: add it to GRAFANA_VARIABLES"
        return GRAFANA_VARIABLES[name]

    return _GRAFANA_VARIABLE.sub(value, expr)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run scripts/test-tools.sh (it installs Debian's prometheus package)")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)


SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
"""The series names a metric family of each type exposes (a counter family ``x`` is sampled as ``x_total``)."""


def sample_types(families: list[tuple[str, str]]) -> dict[str, str]:
    """Series name -> its family's type, for (family name, type) pairs."""
    return {name + suffix: kind for name, kind in families for suffix in SAMPLE_SUFFIXES.get(kind, ("",))}


# -- what an expression uses ------------------------------------------------------------------------
@dataclass
class Uses:
    """The metrics an expression selects (each with the labels its matchers name) and the label
    names its by/without/on/ignoring/group_x clauses name, each with the metrics below that clause."""

    selectors: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    groupings: list[tuple[frozenset[str], frozenset[str]]] = field(default_factory=list)
    calls: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    """Each function call and the metrics its arguments select."""


# Functions whose result keeps its vector argument's labels: those the files use (a new one fails
# result_labels() until it is added here, after checking that it does keep them).
_KEEP_LABELS = {"rate", "increase", "deriv", "changes"}


def uses(expr: str) -> Uses:
    """Metric and label names ``expr`` relies on (see :class:`Uses`)."""
    found = Uses()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            assert node.name, f"{expr!r}: a selector without a metric name cannot be checked"
            labels = frozenset(m.name for m in node.matchers.matchers) - {"__name__"}
            found.selectors.append((node.name, labels))
        elif isinstance(node, promql.Call):
            found.calls.append((node.func.name, _metrics(node)))
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            found.groupings.append((frozenset(node.modifier.labels), _metrics(node.expr)))
        elif isinstance(node, promql.BinaryExpr) and node.modifier is not None:
            names = set(node.modifier.group_labels or ())
            if node.modifier.matching is not None:
                names.update(node.modifier.matching.labels)
            if names:
                found.groupings.append((frozenset(names), _metrics(node)))

    promql.walk(promql.parse(expr), visit)
    return found


def _metrics(node: Any) -> frozenset[str]:
    names: set[str] = set()
    promql.walk(node, lambda n: names.add(n.name) if isinstance(n, promql.VectorSelector) else None)
    return frozenset(names)


def result_labels(expr: str, exported: dict[str, frozenset[str]]) -> frozenset[str]:
    """The label names of ``expr``'s result series, given each metric's exported labels (Prometheus'
    rules: aggregations keep their by() labels, one-to-one matching with on() only those...)."""
    labels = _result(promql.parse(expr), exported)
    assert labels is not None, f"{expr!r} is a scalar: it has no labels to name"
    return labels


def _result(node: Any, exported: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """Labels of ``node``'s result; None for a scalar."""
    if isinstance(node, promql.NumberLiteral):
        return None
    if isinstance(node, promql.VectorSelector):
        return exported.get(node.name, frozenset()) | SCRAPE_LABELS
    if isinstance(node, promql.MatrixSelector):
        return _result(node.vector_selector, exported)
    if isinstance(node, (promql.ParenExpr, promql.UnaryExpr, promql.SubqueryExpr)):
        return _result(node.expr, exported)
    if isinstance(node, promql.Call):
        name = node.func.name
        if name == "vector":
            return frozenset()
        vectors = [labels for arg in node.args if (labels := _result(arg, exported)) is not None]
        if name == "histogram_quantile":
            return vectors[0] - {"le"}
        assert name in _KEEP_LABELS, f"function {name}() is not modelled here: add it to tests/monitoring.py"
        return vectors[0]
    if isinstance(node, promql.AggregateExpr):
        inner = _result(node.expr, exported) or frozenset()
        if node.modifier is None:
            return frozenset()
        chosen = frozenset(node.modifier.labels)
        return chosen if node.modifier.type == promql.AggModifierType.By else inner - chosen
    if isinstance(node, promql.BinaryExpr):
        return _binary(node, _result(node.lhs, exported), _result(node.rhs, exported))
    raise AssertionError(f"PromQL node {type(node).__name__} is not modelled here: add it to tests/monitoring.py")


def _binary(node: Any, lhs: frozenset[str] | None, rhs: frozenset[str] | None) -> frozenset[str] | None:
    if lhs is None or rhs is None:
        return lhs if rhs is None else rhs
    op = str(node.op)
    if op in ("and", "unless"):
        return lhs
    if op == "or":
        return lhs | rhs
    modifier = node.modifier
    matching = modifier.matching if modifier is not None else None
    extra = frozenset(modifier.group_labels or ()) if modifier is not None else frozenset()
    if modifier is not None and modifier.card == promql.VectorMatchCardinality.ManyToOne:
        return lhs | extra
    if modifier is not None and modifier.card == promql.VectorMatchCardinality.OneToMany:
        return rhs | extra
    if matching is None:
        return lhs
    named = frozenset(matching.labels)
    return named if matching.type == promql.LabelModifierType.Include else lhs - named

"""deploy/grafana: the dashboard and the alert rules load, and every PromQL expression in them
names only series the service exports, with labels those series have (offline: the names and
labels come from a fresh :class:`Metrics`, the registry ``GET /metrics`` renders)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from service.observability.metrics import Metrics
from service.observability.series import PlainCounter, PlainHistogram
from tests.support import ROOT, parse

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "keras-serve.json"
ALERTS = GRAFANA / "alerts.yaml"

# Added by issue 15 (feature drift and the payload log), with their labels. They may not be in
# the registry yet; once they are, the registry's own names and labels are checked.
ISSUE_15 = {
    "model_feature_drift": frozenset({"model", "version", "feature"}),
    "payload_log_dropped_total": frozenset({"reason"}),
    "payload_log_lines_total": frozenset(),
}
# Labels Prometheus adds to every series it scrapes, whatever the target exports.
TARGET_LABELS = frozenset({"job", "instance"})
# What the dashboard must show: the series each of its rows is about.
SHOWN = {
    "inference_requests_total",
    "inference_request_duration_seconds_bucket",
    "model_predictions_total",
    "model_out_of_range_total",
    "model_feature_drift",
    "model_shadow_predictions_total",
    "model_shadow_probability_difference_bucket",
    "http_overload_rejections_total",
    "http_connections_refused_total",
    "http_predictions_in_flight",
    "model_reloads_total",
    "model_info",
    "payload_log_lines_total",
    "payload_log_dropped_total",
}
ALERTS_EXPECTED = {
    "KerasServeFeatureDrift",
    "KerasServeHighErrorRatio",
    "KerasServeHighLatencyP99",
    "KerasServeShadowDisagreement",
    "KerasServePayloadLogDrops",
    "KerasServeNoReadyModel",
    "KerasServeAbsent",
}

Series = dict[str, frozenset[str]]


def label_names(collector: MetricWrapperBase | PlainCounter | PlainHistogram) -> tuple[str, ...]:
    if isinstance(collector, PlainCounter | PlainHistogram):
        return collector.labelnames
    return tuple(collector._labelnames)  # prometheus-client keeps them there


def registry_series() -> Series:
    """Every sample name a fresh Metrics renders, with its label names (``le`` included for
    ``_bucket``): one child of each labelled series is made so that it is rendered."""
    metrics = Metrics()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase | PlainCounter | PlainHistogram):
            names = label_names(collector)
            if names:
                collector.labels(*(["x"] * len(names)))
    series: dict[str, set[str]] = {}
    for name, labels in parse(generate_latest(metrics.registry).decode()):
        series.setdefault(name, set()).update(label for label, _ in labels)
    return {name: frozenset(labels) for name, labels in series.items()}


@pytest.fixture(scope="module")
def exported() -> Series:
    return {**ISSUE_15, **registry_series()}


# -- PromQL, read with regular expressions --------------------------------------------------------
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
RANGE = re.compile(r"\[[^\[\]]*\]")  # [5m], [$__rate_interval], a subquery's [1h:1m]
SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")
LABEL = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*$")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


class Expression:
    """The metric names of a PromQL expression, the labels each selector matches on, and the
    labels named in its by/without/on/ignoring/group_left/group_right clauses."""

    def __init__(self, text: str) -> None:
        self.text = text
        rest = STRING.sub('""', text)
        rest = RANGE.sub(" ", rest)
        self.selectors: list[tuple[str, set[str]]] = []
        for match in SELECTOR.finditer(rest):
            matchers = [m for m in match.group(2).replace('""', "").split(",") if m.strip()]
            labels = set()
            for matcher in matchers:
                parsed = LABEL.match(matcher)
                assert parsed, f"cannot read matcher {matcher!r} in {text!r}"
                labels.add(parsed.group(1))
            self.selectors.append((match.group(1) or "", labels))
        rest = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", rest)
        self.grouping: set[str] = set()
        for match in GROUPING.finditer(rest):
            self.grouping.update(x.strip() for x in match.group(2).split(",") if x.strip())
        rest = GROUPING.sub(" ", rest)
        self.metrics: set[str] = set()
        for match in IDENTIFIER.finditer(rest):
            name = match.group()
            if name in KEYWORDS or rest[match.end() :].lstrip().startswith("("):
                continue  # a keyword, or a function or aggregation called
            self.metrics.add(name)
        assert not GRAFANA_VARIABLE.search(rest), f"a variable outside a string or range: {text!r}"

    def problems(self, exported: Series) -> list[str]:
        found = []
        unknown = sorted(self.metrics - set(exported))
        if unknown:
            found.append(f"not exported: {unknown}")
        for name, labels in self.selectors:
            assert name, f"a selector without a metric name: {self.text!r}"
            extra = labels - exported.get(name, frozenset()) - TARGET_LABELS
            if name in exported and extra:
                found.append(f"{name} has no label {sorted(extra)}")
        known = set(TARGET_LABELS).union(*(exported.get(name, ()) for name in self.metrics))
        if self.grouping - known:
            found.append(f"grouped by labels none of its series has: {self.grouping - known}")
        return found


def check(text: str, exported: Series) -> list[str]:
    return [f"{text!r}: {problem}" for problem in Expression(text).problems(exported)]


def test_the_reader_finds_metric_names_and_labels(exported: Series) -> None:
    expression = Expression(
        'sum by (model, le) (rate(inference_request_duration_seconds_bucket{job=~"$job", '
        'protocol!="a{b}"}[$__rate_interval])) / on (model) group_left () '
        "sum by (model) (rate(model_predictions_total[5m] offset 1h)) > bool 1e3"
    )
    assert expression.metrics == {
        "inference_request_duration_seconds_bucket",
        "model_predictions_total",
    }
    assert expression.grouping == {"model", "le"}
    assert expression.selectors == [
        ("inference_request_duration_seconds_bucket", {"job", "protocol"})
    ]
    assert expression.problems(exported) == []
    assert check("sum(rate(inference_requests[5m]))", exported)  # the counter is ..._total
    assert check('inference_requests_total{route="/predict"}', exported)  # not its label
    assert check("sum by (route) (inference_requests_total)", exported)
    assert check("inference_request_duration_seconds", exported)  # a histogram: _bucket...


def test_the_registry_has_the_series_the_dashboard_is_built_on(exported: Series) -> None:
    assert exported["inference_requests_total"] == {"model", "version", "protocol", "status"}
    assert exported["inference_request_duration_seconds_bucket"] == {
        "model",
        "version",
        "protocol",
        "le",
    }
    assert exported["model_out_of_range_total"] == {"model", "feature"}
    assert exported["http_predictions_in_flight"] == frozenset()
    registry = registry_series()
    for name, labels in ISSUE_15.items():  # once the service exports them: as listed above
        assert registry.get(name, labels) == labels, name


# -- the dashboard --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_dashboard_loads_with_unique_panel_ids(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    titles = [p["title"] for p in all_panels(dashboard)]
    assert len(titles) == len(set(titles))


def test_panels_lie_on_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_variables(dashboard: dict[str, Any]) -> None:
    found = variables(dashboard)
    assert {"datasource", "model", "version"} <= set(found)
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    for name in ("model", "version"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert re.fullmatch(rf"label_values\(.+, {name}\)", variable["definition"])
        assert variable["query"]["query"] == variable["definition"]
    # Every variable an expression uses is defined (Grafana's own $__... aside).
    used = set()
    for text in dashboard_expressions(dashboard):
        used.update(a or b for a, b in GRAFANA_VARIABLE.findall(text))
    assert {name for name in used if not name.startswith("__")} <= set(found)


def test_every_query_reads_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    source = {"type": "prometheus", "uid": "${datasource}"}
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_expressions_use_only_exported_series(
    dashboard: dict[str, Any], exported: Series
) -> None:
    problems = []
    for text in dashboard_expressions(dashboard):
        problems += check(text, exported)
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            problems += check(match.group(1), exported)
            (series,) = Expression(match.group(1)).metrics
            assert match.group(2) in exported[series] | TARGET_LABELS, variable["definition"]
    assert problems == []


def test_dashboard_shows_every_series_asked_for(dashboard: dict[str, Any]) -> None:
    used = set()
    for text in dashboard_expressions(dashboard):
        used |= Expression(text).metrics
    assert used >= SHOWN, SHOWN - used


def test_drift_panel_draws_both_thresholds(dashboard: dict[str, Any]) -> None:
    (panel,) = [p for p in all_panels(dashboard) if p["title"] == "Feature drift (PSI) by feature"]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
    assert [step["value"] for step in defaults["thresholds"]["steps"]] == [None, 0.1, 0.2]


# -- the alert rules ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        found += group["rules"]
    return found


def test_alert_rules_are_complete(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) == ALERTS_EXPECTED
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_expressions_use_only_exported_series(
    rules: list[dict[str, Any]], exported: Series
) -> None:
    problems = []
    for rule in rules:
        problems += check(rule["expr"], exported)
        # An annotation's {{ $labels.x }} is a label the alert keeps: one it groups by.
        expression = Expression(rule["expr"])
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                if label not in expression.grouping:
                    problems.append(f"{rule['alert']}: $labels.{label} is not kept")
    assert problems == []


def test_alert_thresholds(rules: list[dict[str, Any]]) -> None:
    by_name = {rule["alert"]: rule for rule in rules}
    drift = by_name["KerasServeFeatureDrift"]
    assert (drift["for"], drift["expr"].rstrip().endswith("> 0.2")) == ("15m", True)
    errors = by_name["KerasServeHighErrorRatio"]
    assert (errors["for"], errors["expr"].rstrip().endswith("> 0.05")) == ("10m", True)
    assert by_name["KerasServeShadowDisagreement"]["expr"].rstrip().endswith("> 0.1")
    assert 'agree="false"' in by_name["KerasServeShadowDisagreement"]["expr"]

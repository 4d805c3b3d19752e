"""manifests/monitoring (a kustomize Component): the Grafana dashboard, the
PodMonitors and the PrometheusRule are checked against what the code really
exports and with the real tools.

* The exported names are the two registries (``logstore.server.metrics.HELP``,
  ``picchio_operator.metrics._HELP``; recording anything undeclared raises),
  expanded by type (histogram ``_bucket/_sum/_count``, summary ``_sum/_count``),
  and each declared name must be recorded somewhere in its package — a
  declared-but-never-set name would be a panel on nothing.
* Every dashboard query and every rule expression is parsed by promtool (the
  dashboard's as recording rules, Grafana variables substituted) and its metric
  names, found by a small PromQL tokenizer, must all be exported.
* ``promtool check rules`` and ``promtool test rules`` (alerts firing and not
  firing, tests/operator/data/monitoring-alerts-test.yaml) on the rules;
  ``promtool check metrics`` on both registries' exposition.
* ``kubectl kustomize`` renders an overlay that enables the component; the
  objects' fields are those of monitoring.coreos.com/v1, and the PodMonitors
  select the pods the operator really creates, on ports those pods have.

promtool is Debian's ``prometheus`` package (``make deps``); missing, the
tests fail — they never skip.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from opsupport import REPO, cluster_body
from test_operator_manifests import _kubectl

from logstore.server import metrics as ls_metrics
from picchio_operator import metrics as op_metrics
from picchio_operator.handlers import gauges
from picchio_operator.model.cluster import statefulset
from picchio_operator.model.config import render_config
from picchio_operator.model.log import LogObservation, SegmentView
from picchio_operator.model.spec import parse_cluster, parse_log

MON = REPO / "manifests" / "monitoring"
DASHBOARD = MON / "dashboards" / "picchio.json"
ALERT_TESTS = Path(__file__).parent / "data" / "monitoring-alerts-test.yaml"
SYNTHETIC = {"up"}  # series Prometheus makes itself for every target


def _promtool() -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool not found: `make deps` installs Debian's prometheus package (promtool 2.42)"
    return tool


def _run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd)


# -- what the code exports ------------------------------------------------------------------------
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
             "summary": ("_sum", "_count")}


def _declared() -> dict[str, tuple[str, Path]]:
    """Declared family name → (type, package root it must be used in)."""
    out = {n: (t, REPO / "logstore") for n, (t, _) in ls_metrics.HELP.items()}
    out.update({n: (t, REPO / "operator" / "picchio_operator") for n, (t, _) in op_metrics._HELP.items()})
    return out


def exported_series() -> set[str]:
    return {name + sfx for name, (typ, _) in _declared().items() for sfx in _SUFFIXES[typ]}


def test_every_declared_metric_is_recorded_by_the_code() -> None:
    registries = {Path(ls_metrics.__file__).resolve(), Path(op_metrics.__file__).resolve()}
    sources = {root: "\n".join(p.read_text() for p in root.rglob("*.py") if p.resolve() not in registries)
               for root in {root for _, root in _declared().values()}}
    unused = [name for name, (_, root) in _declared().items() if f'"{name}"' not in sources[root]]
    # these two are recorded by the registry's own reconcile() context manager, which the handlers use
    assert unused == ["picchio_operator_reconciles_total", "picchio_operator_reconcile_seconds"], unused
    assert "rt.metrics.reconcile(" in sources[REPO / "operator" / "picchio_operator"]


# -- PromQL: metric names out of an expression -----------------------------------------------------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan", "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
             "quantile", "count_values", "group"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: string literals, label
    matchers, range/offset durations and grouping lists removed; what is left
    that looks like an identifier and is neither a keyword nor a function call
    is a metric name."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def test_tokenizer_finds_metrics_and_only_metrics() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (namespace, le) (rate(a_seconds_bucket{x="y", '
                        'z=~"b|c"}[5m]))) > on(namespace) group_left(pod) b_total offset 5m') == \
        {"a_seconds_bucket", "b_total"}
    assert metric_names('absent(up{job="picchio-operator"} == 1) or vector(0)') == {"up"}
    assert metric_names("x <= bool y unless ignoring(le) z") == {"x", "y", "z"}


# -- the dashboard ------------------------------------------------------------------------------------
def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out += [p] if p["type"] != "row" else p.get("panels", [])
    return out


def _grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables so promtool can parse the query."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            .replace("$namespace", ".*").replace("$cluster", ".*").replace("$log", ".*"))


def _variable_queries(d: dict) -> list[str]:
    """The PromQL inside templating queries (label_values(EXPR, label))."""
    out = []
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
        assert m, f"variable {v['name']}: unexpected query {q!r}"
        out.append(m.group(1))
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    d = _dashboard()
    out = []
    for p in _panels(d):
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        out += [(p["title"], t["expr"]) for t in p["targets"]]
    out += [(f"variable {i}", q) for i, q in enumerate(_variable_queries(d))]
    return out


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": _grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    out = _run(_promtool(), "check", "rules", str(tmp_path / "dashboard.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_dashboard_query_uses_exported_metrics_only() -> None:
    known = exported_series() | SYNTHETIC
    missing = {(title, n) for title, expr in dashboard_exprs() for n in metric_names(expr) - known}
    assert not missing, f"panels on metrics nobody exports: {sorted(missing)}"


def test_dashboard_shows_what_users_look_for() -> None:
    used = {n for _, expr in dashboard_exprs() for n in metric_names(expr)}
    for name in ("picchio_logstore_entries_total",            # append rate
                 "picchio_logstore_bytes_total",              # bytes
                 "picchio_logstore_append_seconds_bucket",    # ack latency
                 "picchio_operator_log_segments",             # segments per log
                 "picchio_operator_log_truncation_lag_seconds",
                 "picchio_operator_log_gc_backlog_segments",
                 "picchio_operator_gc_bytes_total",           # reclaimed bytes
                 "picchio_logstore_disk_usage_ratio",
                 "picchio_logstore_append_errors_total",      # quorum errors
                 "picchio_operator_cluster_logstores_ready",
                 "picchio_operator_reconciles_total",
                 "picchio_operator_errors_total"):
        assert name in used, name
    exprs = " ".join(e for _, e in dashboard_exprs())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    d = _dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and d["uid"]
    refs = {t["datasource"]["uid"] for p in _panels(d) for t in p["targets"]}
    assert refs == {"${datasource}"}, "every query goes through the data-source variable"


# -- the rules ------------------------------------------------------------------------------------
def _rule_groups() -> dict:
    (rule,) = [d for d in yaml.safe_load_all((MON / "prometheusrule.yaml").read_text()) if d]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return rule["spec"]


def test_rules_check_and_unit_tests_with_promtool(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rule_groups()))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts-test.yaml")
    check = _run(_promtool(), "check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    test = _run(_promtool(), "test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The alert tests are not vacuous: a quorum rule off by one fails them."""
    spec = _rule_groups()
    for g in spec["groups"]:
        for r in g["rules"]:
            if r.get("alert") == "PicchioQuorumAtRisk":
                r["expr"] = r["expr"].replace("<=", "<")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts-test.yaml")
    test = _run(_promtool(), "test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert test.returncode != 0 and "PicchioQuorumAtRisk" in test.stdout + test.stderr


def test_alerts_cover_the_failures_and_use_exported_metrics() -> None:
    rules = [r for g in _rule_groups()["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules}
    for name in ("PicchioLogStoreDown", "PicchioQuorumAtRisk", "PicchioQuorumLost",
                 "PicchioLogStoreDiskAboveSoftLimit", "PicchioGcBacklogGrowing",
                 "PicchioOperatorReconcileErrors", "PicchioOrphanObjectsFound", "PicchioSegmentsMissingObjects"):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"] in {"info", "warning", "critical"}
        assert alerts[name]["annotations"]["summary"] and alerts[name]["annotations"]["description"]
    known = exported_series() | SYNTHETIC
    missing = {(r["alert"], n) for r in rules for n in metric_names(r["expr"]) - known}
    assert not missing, f"alerts on metrics nobody exports: {sorted(missing)}"
    jobs = set(re.findall(r'job="([^"]+)"', " ".join(r["expr"] for r in rules)))
    assert jobs == {"picchio-logstore", "picchio-operator"}  # the job names the PodMonitors set


# -- exposition of both registries ------------------------------------------------------------------
def test_logstore_exposition_passes_promtool_and_histogram_is_cumulative() -> None:
    m = ls_metrics.Metrics()
    for s in (0.0002, 0.003, 0.003, 7.0):
        m.observe("picchio_logstore_append_seconds", s)
    m.inc("picchio_logstore_append_errors_total", code="DISK_FULL")
    m.set("picchio_logstore_disk_usage_ratio", 0.5)
    text = m.render()
    out = _run(_promtool(), "check", "metrics", stdin=text)
    assert out.returncode == 0, out.stdout + out.stderr
    buckets = re.findall(r'picchio_logstore_append_seconds_bucket\{le="([^"]+)"\} (\d+)', text)
    assert dict(buckets)["0.0005"] == "1" and dict(buckets)["0.005"] == "3" and dict(buckets)["5"] == "3"
    assert buckets[-1] == ("+Inf", "4") and "picchio_logstore_append_seconds_count 4" in text
    assert 'picchio_logstore_append_errors_total{code="DISK_FULL"} 1' in text
    assert "\npicchio_logstore_append_errors_total " not in text  # a labelled family has no bare series
    with pytest.raises(KeyError):
        m.set("picchio_logstore_nope", 1)
    with pytest.raises(KeyError):
        m.inc("picchio_logstore_append_errors_total")  # its label is required
    with pytest.raises(KeyError):
        m.inc("picchio_logstore_disk_usage_ratio")  # a gauge is not a counter


def test_operator_gauges_follow_observations_and_go_with_their_object() -> None:
    m = op_metrics.Metrics()
    c = parse_cluster(cluster_body())
    gauges.cluster(m, c, {"readyReplicas": 2})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    log_body = {"apiVersion": "picchio.dev/v1alpha1", "kind": "WoodpeckerLog",
                "metadata": {"name": "orders", "namespace": c.namespace, "uid": "u", "generation": 1},
                "spec": {"clusterRef": c.name}}
    s = parse_log(log_body)
    segs = tuple(SegmentView(i, "COMPLETED" if i < 3 else "ACTIVE", 0, 9, 100,
                             create_time=now - timedelta(hours=4 - i)) for i in range(4))
    from logstore.ids import MessageId
    gauges.log(m, s, LogObservation(7, segs, MessageId(1, 9), MessageId(3, 9)), now)
    text = m.render()
    assert _run(_promtool(), "check", "metrics", stdin=text).returncode == 0
    lab = {"namespace": c.namespace, "cluster": c.name}
    assert m.value("picchio_operator_cluster_logstores_ready", **lab) == 2
    assert m.value("picchio_operator_cluster_ack_quorum", **lab) == c.quorum.ack_quorum
    assert m.value("picchio_operator_log_segments", **lab, log="orders") == 4
    assert m.value("picchio_operator_log_gc_backlog_segments", **lab, log="orders") == 2  # segments 0 and 1
    # the oldest retained segment is 2 (created 2 h ago): the truncation lag
    assert m.value("picchio_operator_log_truncation_lag_seconds", **lab, log="orders") == 7200
    gauges.forget_log(m, c.namespace, "orders")
    assert "picchio_operator_log_segments{" not in m.render()
    assert m.value("picchio_operator_cluster_logstores_ready", **lab) == 2
    gauges.forget_cluster(m, c.namespace, c.name)
    assert "picchio_operator_cluster_logstores_ready{" not in m.render()
    with pytest.raises(KeyError):
        m.set("picchio_operator_gc_bytes_total", 1)  # a counter is not set


# -- the kustomize component ------------------------------------------------------------------------
def _render_with_component(overlay: Path) -> list[dict]:
    """A user's overlay as the README shows it: the operator's manifests plus
    the component (kustomize wants relative paths, and a base may not contain
    its overlay, hence a directory of its own)."""
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "manifests", overlay)],
        "components": [os.path.relpath(MON, overlay)]}))
    out = _run(_kubectl(), "kustomize", str(overlay))
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# fields of monitoring.coreos.com/v1 this component may use (prometheus-operator's API types)
_PODMONITOR_SPEC = {"jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "namespaceSelector",
                    "sampleLimit", "targetLimit", "labelLimit", "attachMetadata"}
_ENDPOINT = {"port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
             "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "enableHttp2", "filterRunning"}
_RELABEL = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
_RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_component_renders_valid_objects_that_select_the_real_pods(tmp_path: Path) -> None:
    objs = _render_with_component(tmp_path)
    mon = [o for o in objs if o["apiVersion"] == "monitoring.coreos.com/v1"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in mon) == [
        ("PodMonitor", "picchio-logstore"), ("PodMonitor", "picchio-operator"), ("PrometheusRule", "picchio")]
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "picchio-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["picchio.json"]) == _dashboard()
    for o in mon + [cm]:
        assert o["metadata"]["namespace"] == "picchio-system"
    for pm in (o for o in mon if o["kind"] == "PodMonitor"):
        assert set(pm["spec"]) <= _PODMONITOR_SPEC, pm["spec"].keys()
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert set(ep) <= _ENDPOINT, ep.keys()
            for r in ep.get("relabelings", []):
                assert set(r) <= _RELABEL, r.keys()
    for g in next(o for o in mon if o["kind"] == "PrometheusRule")["spec"]["groups"]:
        assert set(g) <= {"name", "interval", "rules"}
        for r in g["rules"]:
            assert set(r) <= _RULE and ("alert" in r) != ("record" in r), r

    by_name = {o["metadata"]["name"]: o for o in mon}
    # the LogStore pods, as the operator builds them
    c = parse_cluster(cluster_body())
    pod = statefulset(c, render_config(c))["spec"]["template"]
    ls = by_name["picchio-logstore"]["spec"]
    assert _matches(ls["selector"], pod["metadata"]["labels"]) and ls["namespaceSelector"] == {"any": True}
    ports = {p["name"]: p for ctr in pod["spec"]["containers"] for p in ctr.get("ports", [])}
    assert {ep["port"] for ep in ls["podMetricsEndpoints"]} == {"metrics"} and "metrics" in ports
    # the operator's pod, from the same rendering
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    op = by_name["picchio-operator"]["spec"]
    assert _matches(op["selector"], dep["spec"]["template"]["metadata"]["labels"])
    (ctr,) = dep["spec"]["template"]["spec"]["containers"]
    port = {p["name"]: p["containerPort"] for p in ctr["ports"]}["metrics"]
    assert ctr["args"][ctr["args"].index("--metrics-port") + 1] == str(port)
    assert op["podMetricsEndpoints"][0]["honorLabels"] is True  # its gauges' namespace label wins

"""The shipped Prometheus alert rules (``deploy/prometheus/``): valid, tested, about our metrics.

promtool (Debian's ``prometheus`` package; ``make test`` installs it) checks the
rules and the config that loads them, and runs the rule unit tests in
``alerts_test.yml``. The rest reads the YAML: every alert has a case where it
fires and one where it stays quiet, can be acted on by a person on call, and
uses only metrics that ``silvertine_streams.observability.metrics`` exports, so
a renamed metric or a typo fails here instead of never firing in production.
No server is started.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import Metric

from silvertine_streams.observability import metrics

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"
CONFIG = DEPLOY / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

PROMETHEUS_OWN_SERIES = frozenset({"up"})
"""Series Prometheus itself writes for every target; alerts may use them."""
SEVERITIES = frozenset({"critical", "warning"})
PROMQL_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
})
PROMTOOL_HINT = ("promtool is not installed: `make test` installs it (Debian's prometheus "
                 "package: apt-get install -y prometheus), or put it on PATH")


def promtool() -> str:
    """The promtool executable; fails the test (never skips) when there is none."""
    found = shutil.which("promtool") or next(
        (p for p in ("/usr/bin/promtool", "/usr/local/bin/promtool") if Path(p).is_file()), None)
    if found is None:
        pytest.fail(PROMTOOL_HINT, pytrace=False)
    return found


def run_promtool(*args: str) -> str:
    """Run ``promtool args…``; fail with its output unless it succeeds."""
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                            check=False)
    output = f"{result.stdout}\n{result.stderr}".strip()
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def load(path: Path) -> Any:
    """Parse a YAML file with the safe loader."""
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]
            if "alert" in rule]


def rule_tests() -> list[dict[str, Any]]:
    """Every ``alert_rule_test`` case of alerts_test.yml."""
    return [case for test in load(ALERTS_TEST)["tests"]
            for case in test.get("alert_rule_test", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', " ", expr)  # string literals
    text = re.sub(r"#[^\n]*", " ", text)  # comments
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    # Label lists of aggregations and vector matching.
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group()
        if token in PROMQL_KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(token)
    return names


def exported_series() -> set[str]:
    """Every series name our metrics module can export, with the suffixes of each type."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    families: list[Metric] = [*metrics.REGISTRY.collect(), *metrics.SinkRetries([]).collect()]
    return {family.name + suffix for family in families for suffix in suffixes[family.type]}


def test_promtool_accepts_the_rules() -> None:
    output = run_promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output, output


def test_prometheus_config_loads_the_rules() -> None:
    assert "alerts.yml" in load(CONFIG)["rule_files"]
    # promtool resolves rule_files relative to the config and checks them too.
    output = run_promtool("check", "config", str(CONFIG))
    assert "1 rule files found" in output, output
    volumes = load(COMPOSE)["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes, (
        "docker-compose's Prometheus does not mount the alert rules next to its config")


def test_promtool_rule_unit_tests_pass() -> None:
    run_promtool("test", "rules", str(ALERTS_TEST))


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), f"alert names used twice: {sorted(names)}"
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in rule_tests():
        # promtool passes a case whose alert does not exist and which expects none.
        assert case["alertname"] in names, f"alerts_test.yml tests an unknown alert: {case}"
        (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert not set(names) - fires, f"alerts never seen firing: {sorted(set(names) - fires)}"
    assert not set(names) - quiet, f"alerts never checked quiet: {sorted(set(names) - quiet)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_is_actionable(rule: dict[str, Any]) -> None:
    assert "for" in rule, "no `for:` duration"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, "severity not one of " + str(
        sorted(SEVERITIES))
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), "no summary"
    assert len(annotations.get("description", "").split()) >= 15, (
        "the description should tell a person on call what happened and what to check")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alerts_use_only_metrics_we_export(rule: dict[str, Any]) -> None:
    used = metric_names(rule["expr"])
    assert used, f"no metric found in {rule['expr']!r}"
    unknown = used - exported_series() - PROMETHEUS_OWN_SERIES
    assert not unknown, (
        f"{rule['alert']} uses {sorted(unknown)}, which silvertine_streams/observability/"
        "metrics.py does not export (a typo, or a renamed metric)")


def test_handler_lag_is_alerted_once_the_metric_exists() -> None:
    # Handler lag has no metric yet (alerts.yml says so); when it gets one, it needs a rule.
    lag_series = {name for name in exported_series() if name.startswith("silvertine_handler_lag")}
    used = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert not lag_series or lag_series & used, (
        f"{sorted(lag_series)} is exported but no alert in alerts.yml uses it")


@pytest.mark.parametrize(("expr", "expected"), [
    ('sum by (job, event_type) (increase(silvertine_sequence_gaps_total{event_type=~"a|b"}[5m]))'
     " > 0", {"silvertine_sequence_gaps_total"}),
    ("a / on (job, handler) group_left\nsum without (kind) (rate(b[5m])) > 0.01", {"a", "b"}),
    ("(x unless x offset 5m) or increase(y[1h:5m]) > 1e3", {"x", "y"}),
    ('up{job="silvertine"} == 0', {"up"}),
])
def test_metric_names_are_read_from_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected

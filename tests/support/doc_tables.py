"""The README's metric and alert tables, made from the code and the rule file: the README
holds them verbatim (tests/unit/test_doc_tables.py), so neither can drift from what syncd
exports or what Prometheus evaluates. `python -m tests.support.doc_tables` prints both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prometheus_client import Metric

from syncd.errors import RETRY_REASONS
from syncd.metrics import FOLDER_STATES, HEAL_REASONS, Metrics

ALERTS = Path(__file__).resolve().parents[2] / "config" / "prometheus" / "syncd-alerts.yml"

# Labels whose values are a fixed set in the code: listed, so a new value shows in the table.
_VALUES = {
    ("syncd_folders", "state"): FOLDER_STATES,
    ("syncd_heals", "reason"): HEAL_REASONS,
    ("syncd_request_retries", "reason"): RETRY_REASONS,
}


def _labels(metrics: Metrics) -> dict[str, tuple[str, ...]]:
    """Each family's label names, as declared (prometheus_client keeps them on the metric)."""
    found = {}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if name is not None:
            found[name] = tuple(getattr(value, "_labelnames", ()))
    return found


def metric_table() -> str:
    metrics = Metrics()
    labels = _labels(metrics)
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    families: list[Metric] = list(metrics.registry.collect())
    for family in families:
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names = labels.get(family.name, ()) or labels.get(family.name + suffix, ())
        cells = []
        for label in names:
            values = _VALUES.get((family.name, label))
            cells.append(f"`{label}`" + (f" = {' / '.join(values)}" if values else ""))
        rows.append(
            f"| `{family.name}{suffix}` | {family.type} | {', '.join(cells)} "
            f"| {family.documentation} |"
        )
    return "\n".join(rows)


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_table() -> str:
    rows = ["| alert | severity | after | fires when |", "|---|---|---|---|"]
    for rule in _rules():
        summary = rule["annotations"]["summary"].replace("|", "\\|")
        rows.append(
            f"| {rule['alert']} | {rule['labels']['severity']} | {rule.get('for', '-')} "
            f"| {summary} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(metric_table(), end="\n\n")
    print(alert_table())

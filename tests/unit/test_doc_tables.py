"""The README tells the truth about what it lists: the metric and alert tables are the ones
made from the code and the rule file, and the README stays a product page (<= 400 lines)."""

from __future__ import annotations

from tests.support.doc_tables import alert_table, metric_table
from tests.support.venv import REPO

README = (REPO / "README.md").read_text()
REGENERATE = "regenerate with `python -m tests.support.doc_tables` and paste it into README.md"


def test_the_metric_table_is_the_one_the_code_exports() -> None:
    assert metric_table() in README, REGENERATE
    for name in ("syncd_missing_models", "syncd_heal_incidents_total", "extra_file"):
        assert name in README


def test_the_alert_table_lists_every_rule() -> None:
    assert alert_table() in README, REGENERATE


def test_the_readme_is_a_product_page() -> None:
    assert len(README.splitlines()) <= 400
    for link in ("docs/performance.md", "docs/faults.md", "docs/how-it-works.md"):
        assert (REPO / link).is_file()
        assert f"]({link})" in README

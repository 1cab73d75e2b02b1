"""The fault matrix (docs/faults.md) names tests that exist: a renamed or deleted test shows
here."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def matrix_rows() -> list[str]:
    text = (PROJECT / "docs" / "faults.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| ") and "`" in line]


def test_every_named_test_exists() -> None:
    rows = matrix_rows()
    assert len(rows) >= 25
    named = 0
    for row in rows:
        tests_column = row.rstrip(" |").rsplit(" | ", 1)[1]
        current = None
        for reference in re.findall(r"`([^`]+)`", tests_column):
            file_name, _, test = reference.partition("::")
            current = file_name or current
            assert current is not None, row
            source = (PROJECT / "tests" / "integration" / current).read_text()
            if test:
                assert re.search(rf"^(async )?def {test}\(", source, re.M), reference
                named += 1
    assert named >= 30

"""The status page's text: long errors shortened once, the readiness banner in words."""

from __future__ import annotations

from typing import Any

from syncd.app.web import render_page


def snapshot(error: str, state: str = "registry_unreachable") -> dict[str, Any]:
    return {
        "ready": True,
        "readiness": {"ready": False, "state": state, "detail": "..."},
        "started_at": 0,
        "targets": [
            {
                "name": "prod",
                "root": "/r",
                "selector": "alias production",
                "models": ["m*"],
                "error": error,
                "error_since": 0,
                "writer": True,
                "lock_holder": None,
                "foreign_folders": [],
                "folders": [],
                "unresolved": {},
            }
        ],
        "events": [],
    }


def test_a_long_error_is_shortened_with_the_whole_on_hover() -> None:
    error = "MLflow at http://mlflow:5000: " + "x" * 400
    page = render_page(snapshot(error), now=100)
    assert f'title="{error}"' in page
    assert error not in page.replace(f'title="{error}"', "")
    assert "could not reach the registry" in page
    assert "could not ask the registry yet" in page
    assert "no model matching" not in page
    assert "registry unreachable" in page


def test_nothing_matches_reads_as_a_fact_only_when_the_registry_answered() -> None:
    page = render_page(snapshot("", state="nothing_matches"), now=100)
    assert "no model matching m* has alias production" in page
    assert "ready: nothing matches" in page

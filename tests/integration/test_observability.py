"""Metrics, dashboard, alerts and the status page against a real Prometheus and Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.app.embedded import free_port
from tests.support.daemon import WAIT, eventually, fetch, running, sample
from tests.support.faulty_proxy import FaultyS3Proxy
from tests.support.models import publish, unique_name
from tests.support.runtime import make_settings
from tests.support.tools import need

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "config" / "grafana" / "syncd-dashboard.json"
ALERTS = REPO / "config" / "prometheus" / "syncd-alerts.yml"
ARTIFACTS = Path(os.environ.get("SYNCD_TEST_ARTIFACTS", REPO / "test-artifacts"))


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def as_promql(expr: str) -> str:
    """Grafana's variables as Grafana would expand them for 'All' over a short range."""
    return expr.replace("$__rate_interval", "1m").replace('"$target"', '".*"')


def test_every_alert_has_a_panel_to_look_at() -> None:
    """Whoever is paged opens the dashboard: each metric an alert reads is on a panel."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    alerted = {name for rule in rules for name in re.findall(r"syncd_\w+", rule["expr"])}
    shown = " ".join(expr for _, expr in panel_queries())
    missing = sorted(
        name for name in alerted if name.removesuffix("_bucket") not in shown and name not in shown
    )
    assert not missing, f"no dashboard panel shows {missing}"


def test_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in (
        "throughput",
        "outcomes",
        "percentiles",
        "in flight",
        "heals",
        "checksum",
        "staleness",
        "desired vs synced",
    ):
        assert topic in titles


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = need("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", "syncd-alerts.test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus on loopback; the test writes its scrape target into the config."""
    binary = need("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    process: subprocess.Popen[bytes] | None = None

    def start(scrape_port: int) -> str:
        nonlocal process
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "syncd",
                            "static_configs": [{"targets": [f"127.0.0.1:{scrape_port}"]}],
                        }
                    ],
                }
            )
        )
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=(tmp_path / "prometheus.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        return f"http://127.0.0.1:{port}"

    yield start, tmp_path  # type: ignore[misc]
    if process is not None:
        process.terminate()
        process.wait(timeout=30)


async def query(prometheus_url: str, promql: str) -> dict[str, Any]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    code, body = await fetch(url)
    assert code == 200, f"{promql}: HTTP {code}: {body}"
    document: dict[str, Any] = json.loads(body)
    return document


async def test_prometheus_scrapes_a_daemon_and_every_query_works(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path, prometheus: Any
) -> None:
    start_prometheus, _ = prometheus
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path, name)
    faults.faults.corrupt["model-00002-of-00002.safetensors"] = 1
    faults.faults.server_error["config.json"] = 1
    root = tmp_path / "llm-models"
    settings = make_settings(
        mlflow_server.url,
        targets=[
            {
                "name": "prod",
                "root": str(root),
                "alias": "production",
                "models": [name],
                "after_sync": [{"command": ["true"]}],
            }
        ],
        s3={"endpoint_url": faults.url},
    )
    async with running(settings) as (daemon, url):
        await asyncio.wait_for(daemon.ready.wait(), WAIT)
        (root / published.parent_run_id / "tokenizer.json").unlink()
        await eventually(
            lambda: (
                sample(daemon.metrics, "syncd_heals_total", target="prod", reason="missing_file")
                == 1
            ),
            "heal",
        )
        port = int(url.rsplit(":", 1)[1])
        prometheus_url = start_prometheus(port)

        async def scraped_enough() -> bool:
            try:
                result = await query(prometheus_url, 'count_over_time(up{job="syncd"}[1m]) >= 8')
            except (AssertionError, json.JSONDecodeError):
                return False
            return bool(result["data"]["result"])

        deadline = time.monotonic() + WAIT
        while not await scraped_enough():
            assert time.monotonic() < deadline, "Prometheus never scraped syncd"
            await asyncio.sleep(0.5)

        empty = []
        for title, expr in panel_queries():
            result = await query(prometheus_url, as_promql(expr))
            assert result["status"] == "success", (title, expr, result)
            if not result["data"]["result"]:
                empty.append(f"{title}: {expr}")
        assert empty == [], "panels without data:\n" + "\n".join(empty)

        desired = await query(prometheus_url, "syncd_desired_version")
        synced = await query(prometheus_url, "syncd_synced_version")
        assert (
            desired["data"]["result"][0]["value"][1]
            == synced["data"]["result"][0]["value"][1]
            == "1"
        )
        heals = await query(prometheus_url, 'syncd_heals_total{reason="missing_file"}')
        assert heals["data"]["result"][0]["value"][1] == "1"
        retries = await query(prometheus_url, 'syncd_request_retries_total{reason="throttled"}')
        assert float(retries["data"]["result"][0]["value"][1]) >= 1
        failures = await query(prometheus_url, "syncd_checksum_failures_total")
        assert failures["data"]["result"][0]["value"][1] == "1"

        rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
        for rule in rules:
            result = await query(prometheus_url, rule["expr"])
            assert result["status"] == "success", (rule["alert"], result)
        _code, body = await fetch(prometheus_url + "/api/v1/rules")
        loaded = json.loads(body)["data"]["groups"][0]["rules"]
        assert {rule["name"] for rule in loaded} == {rule["alert"] for rule in rules}
        assert all(rule["health"] == "ok" for rule in loaded), loaded
        # A real firing: corruption seen while Prometheus watches (the earlier one predates its
        # first scrape, so no increase() can show it).
        faults.faults.corrupt["tokenizer_config.json"] = 1
        (root / published.parent_run_id / "tokenizer_config.json").unlink()
        deadline = time.monotonic() + WAIT
        while "SyncdChecksumFailures" not in (await fetch(prometheus_url + "/api/v1/alerts"))[1]:
            assert time.monotonic() < deadline, "SyncdChecksumFailures never fired"
            await asyncio.sleep(0.5)

        variable = await fetch(
            prometheus_url + "/api/v1/label/target/values?match[]=syncd_syncs_total"
        )
        assert "prod" in json.loads(variable[1])["data"]


async def test_status_page_in_headless_chromium(
    mlflow_server: Any, faults: FaultyS3Proxy, tmp_path: Path
) -> None:
    chromium = need("chromium")
    prefix = unique_name("page")
    good = publish(mlflow_server.url, tmp_path, f"{prefix}-llama")
    broken = publish(mlflow_server.url, tmp_path, f"{prefix}-mistral", shard_mib=(1,))
    slow = publish(mlflow_server.url, tmp_path, f"{prefix}-phi", shard_mib=(12,))
    publish(mlflow_server.url, tmp_path, f"{prefix}-refused", shard_mib=(1,), context_run_id="nope")
    faults.faults.corrupt[broken.parent_run_id] = -1
    # ~160 KB/s a stream: 12 MiB takes ~40 s, so phi is still syncing when a slow CI
    # machine has started Chromium twice (at 0.6 MB/s it finished first: a flake)
    faults.faults.slow[slow.parent_run_id] = 0.4
    root = tmp_path / "llm-models"
    settings = make_settings(
        mlflow_server.url,
        targets=[
            {"name": "prod", "root": str(root), "alias": "production", "models": [f"{prefix}-*"]}
        ],
        # phi's two slow ranges hold two request slots; llama and mistral need the others
        s3={"endpoint_url": faults.url, "max_concurrency": 4},
        max_parallel_syncs=3,
    )
    async with running(settings) as (daemon, url):
        await eventually(lambda: (root / good.parent_run_id).is_dir(), "llama synced")
        await eventually(
            lambda: any(f.state == "failed" for f in daemon.folders.values()), "mistral failed"
        )
        await eventually(
            lambda: any(
                f.state == "syncing" and f.progress and f.progress.done_bytes
                for f in daemon.folders.values()
            ),
            "phi syncing",
        )
        status_json = json.loads((await fetch(url + "/api/status"))[1])
        assert status_json["targets"][0]["name"] == "prod"
        profile = tmp_path / "chromium-profile"
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
        ]
        dom = await asyncio.to_thread(
            subprocess.run,
            [chromium, *flags, "--dump-dom", url + "/"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dom.returncode == 0, dom.stderr[-2000:]
        page = dom.stdout
        screenshot = ARTIFACTS / "status-page.png"
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(screenshot.unlink, missing_ok=True)
        shot = await asyncio.to_thread(
            subprocess.run,
            [
                chromium,
                *flags,
                "--hide-scrollbars",
                "--window-size=1280,900",
                f"--screenshot={screenshot}",
                url + "/",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        faults.faults.slow.clear()
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000
    for text in (
        f"{prefix}-llama",
        good.parent_run_id,
        "in place",
        f"{prefix}-mistral",
        "failed",
        "mismatch",
        f"{prefix}-refused",
        "unresolved",
        "Recent events",
        "alias production",
    ):
        assert text in page, text
    assert slow.parent_run_id in page
    assert "syncing" in page
    assert re.search(r"<progress[^>]*></progress> \d+% · \d/\d files · [\d.]+ MB/s", page), page

    # every link is relative, so the page works under Domino's app path prefix
    links = re.findall(r'href="([^"]+)"', page)
    assert set(links) >= {"metrics", "api/status"}
    assert all(not link.startswith(("/", "http")) for link in links)
    base = "https://domino.example.com/apps/abc123/"
    assert urllib.parse.urljoin(base, "api/status") == base + "api/status"

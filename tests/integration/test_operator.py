"""An operator's second day, on the real process: a config mistake is one line, `/metrics`
carries no `_created` doubles, and MLflow's telemetry stays off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.app.embedded import free_port
from tests.integration.test_range_repair import BIG, flip
from tests.support.cli import clean_env, run_sync, run_syncd
from tests.support.daemon import (
    daemon_config,
    get,
    start_process,
    stop_process,
    wait_until,
    write_config,
)
from tests.support.disk import mounted_small_disk
from tests.support.models import publish, unique_name
from tests.support.tools import need


@pytest.mark.parametrize(
    ("variable", "named"),
    [
        ("SYNCD_S3__ENDPOINT_URL", "environment variable SYNCD_S3__ENDPOINT_URL: s3.endpoint_url"),
        ("MLFLOW_S3_ENDPOINT_URL", "environment variable MLFLOW_S3_ENDPOINT_URL: s3.endpoint_url"),
        ("config", "syncd.yaml: s3.endpoint_url"),
    ],
)
def test_an_endpoint_without_a_scheme_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, named: str
) -> None:
    env = clean_env(MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    env.pop("MLFLOW_S3_ENDPOINT_URL", None)
    extra: list[str] = []
    if variable == "config":
        config = tmp_path / "syncd.yaml"
        config.write_text("s3:\n  endpoint_url: 127.0.0.1:9100\n")
        extra = ["--config", str(config)]
    else:
        env[variable] = "127.0.0.1:9100"
    result = run_sync("any", tmp_path / "root", env, *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert "http://127.0.0.1:9100" in lines[0]  # what to write instead
    assert not (tmp_path / "root").exists()


def test_metrics_have_no_created_series(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name("created")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    process = start_process(config, tmp_path / "syncd.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(url + "/readyz")[0] == 200, "ready")
        text = get(url + "/metrics")[1]
    finally:
        stop_process(process)
    assert "syncd_syncs_total" in text
    assert "_created" not in text


def test_mlflow_telemetry_is_off_in_syncd_processes(mlflow_server: Any, tmp_path: Path) -> None:
    """Outside CI (MLflow turns it off there itself) a client would write an installation id
    under XDG_CONFIG_HOME and report usage; syncd's processes do neither."""
    name = unique_name("telemetry")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    config_home = tmp_path / "xdg"
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url, XDG_CONFIG_HOME=str(config_home))
    for variable in ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY"):
        env.pop(variable, None)
    assert run_sync(name, tmp_path / "root", env).returncode == 0
    assert run_syncd("status", "--root", str(tmp_path / "root"), env=env).returncode == 0
    assert not (config_home / "mlflow" / "telemetry.json").exists()
    assert not os.path.exists(config_home / "mlflow")


def _readyz(url: str) -> tuple[int, str]:
    return get(url + "/readyz")


def test_readiness_is_503_naming_s3_while_the_store_cannot_be_reached(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """The model matches but its model_context.json cannot be read (S3 down): not ready. Then,
    with the resolution cached and the folder in place, S3 down does not matter; the folder
    deleted while S3 is down: not ready again, until the folder is back."""
    name = unique_name("nos3")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url, s3={"max_attempts": 1})
    dead = clean_env(MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    url = f"http://127.0.0.1:{port}"

    process = start_process(config, tmp_path / "dead.log", env=dead)
    try:
        wait_until(lambda: _readyz(url)[1].startswith("storage_unreachable"), "503 naming S3")
        code, text = _readyz(url)
        page = get(url + "/")[1]
    finally:
        stop_process(process)
    assert code == 503
    assert "cannot reach the artifact store (S3) for prod/" + name in text
    assert "cannot connect to S3 endpoint" in text
    assert "artifact store unreachable" in page

    process = start_process(config, tmp_path / "live.log", env=clean_env())
    try:
        wait_until(lambda: _readyz(url)[1].startswith("synced"), "synced with S3 up")
    finally:
        stop_process(process)
    (run_folder,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    process = start_process(config, tmp_path / "dead2.log", env=dead)
    try:
        wait_until(lambda: _readyz(url)[0] == 200, "ready from the folder in place")
        assert _readyz(url)[1].startswith("synced")
        for child in run_folder.iterdir():
            child.unlink()
        run_folder.rmdir()
        wait_until(lambda: _readyz(url)[0] == 503, "503 once the folder is gone")
        assert _readyz(url)[1].startswith("storage_unreachable")
    finally:
        stop_process(process)


def test_a_misspelled_syncd_variable_is_refused_like_a_misspelled_key(tmp_path: Path) -> None:
    config = daemon_config(tmp_path, tmp_path / "root", free_port(), "m", "http://127.0.0.1:1")
    env = clean_env(SYNCD_POLL_INTERVALL="5s", SYNCD_PACKAGE="/opt/syncd.whl")
    result = run_syncd("run", "--config", str(config), env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "syncd: config error: environment variable SYNCD_POLL_INTERVALL: not a syncd setting"
        " (did you mean SYNCD_POLL_INTERVAL?)"
    ]
    assert not (tmp_path / "root").exists()


def test_every_problem_of_a_config_is_named_in_one_run(tmp_path: Path) -> None:
    config = tmp_path / "syncd.yaml"
    config.write_text(
        "poll_interval: often\n"
        "targets:\n"
        "  - name: prod\n"
        "    rot: /llm-models\n"  # the typo also makes `root` missing: said once, as the typo
        "    alias: production\n"
        "    models: my-llm\n"
        "http:\n"
        "  prot: 8080\n"
    )
    env = clean_env(SYNCD_LOG_LEVL="debug")
    result = run_syncd("run", "--config", str(config), env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    prefix = f"syncd: config error: {config}: "
    assert sorted(lines) == sorted(
        [
            prefix + "targets.0.rot: unknown key (did you mean 'root'?)",
            prefix + "http.prot: unknown key (did you mean 'port'?)",
            prefix + "targets.0.models: must be a list: write models: [NAME]"
            " (or one '- NAME' per line)",
            prefix + "poll_interval: not a duration: 'often' (use e.g. 30s, 5m, 1h)",
            "syncd: config error: environment variable SYNCD_LOG_LEVL: not a syncd setting"
            " (did you mean SYNCD_LOG_LEVEL?)",
        ]
    ), result.stderr
    assert "more problem" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unusable_root_is_named_and_nothing_is_served(tmp_path: Path) -> None:
    read_only = mounted_small_disk(tmp_path, read_only=True)
    volume = next(read_only)
    try:
        a_file = tmp_path / "not-a-folder"
        a_file.write_text("someone's notes\n")
        port = free_port()
        config = write_config(
            tmp_path / "syncd.yaml",
            {
                "targets": [
                    {"name": f"t{i}", "root": str(root), "alias": "production", "models": ["m"]}
                    for i, root in enumerate(
                        (Path("/proc/llm-models"), volume / "llm-models", a_file, tmp_path / "ok")
                    )
                ],
                "http": {"host": "127.0.0.1", "port": port},
                "mlflow": {"tracking_uri": "http://127.0.0.1:1"},
            },
        )
        result = run_syncd("run", "--config", str(config), env=clean_env())
    finally:
        next(read_only, None)
    assert result.returncode == 2
    prefix = f"syncd: config error: {config}: "
    assert result.stderr.splitlines() == [
        prefix
        + "targets.0.root: cannot write /proc/llm-models: no such file or directory (ENOENT)",
        prefix + f"targets.1.root: cannot write {volume}/llm-models: read-only file system (EROFS)",
        prefix + f"targets.2.root: cannot write {a_file}: not a directory (ENOTDIR)",
    ]
    assert "serving on" not in result.stderr + result.stdout
    assert a_file.read_text() == "someone's notes\n"


ALERTS = Path(__file__).resolve().parents[2] / "config" / "prometheus" / "syncd-alerts.yml"


def _series(text: str, name: str) -> dict[str, float]:
    """Every sample of one metric in Prometheus text, by its series (name and labels)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            found[series] = float(value)
    return found


def test_the_heal_loop_alert_counts_incidents_not_files(mlflow_server: Any, tmp_path: Path) -> None:
    """One `rm -rf` of a 5-file folder heals 5 files: one incident, no SyncdHealLoop. The
    same damage three times is a loop. The rule is run by promtool on the series the real
    daemon exported after each incident."""
    promtool = need("promtool")
    name = unique_name("loop")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1, 1, 1, 1, 1))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    url = f"http://127.0.0.1:{port}"
    metric = "syncd_heal_incidents_total"
    process = start_process(config, tmp_path / "syncd.log")
    scrapes = []
    try:
        wait_until(lambda: get(url + "/readyz")[1].startswith("synced"), "synced")
        (folder,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        scrapes.append(get(url + "/metrics")[1])
        for incident in (1, 2, 3):
            shutil.rmtree(folder)
            wait_until(
                lambda n=incident: (
                    _series(get(url + "/metrics")[1], metric)
                    == {f'{metric}{{target="prod"}}': float(n)}
                    and get(url + "/readyz")[1].startswith("synced")
                ),
                f"incident {incident} healed",
            )
            scrapes.append(get(url + "/metrics")[1])
    finally:
        stop_process(process)
    assert files >= 5
    assert sum(_series(scrapes[1], "syncd_heals_total").values()) == files  # per file

    # Minutes 0, 1-20, 21-30, 31-40: before, after one incident, after two, after three.
    repeats = (1, 20, 10, 10)
    series: dict[str, list[str]] = {}
    for text, times in zip(scrapes, repeats, strict=True):
        for name_, value in {
            **_series(text, metric),
            **_series(text, "syncd_heals_total"),
        }.items():
            series.setdefault(name_, []).extend([f"{value:g}"] * times)
    (rule,) = [
        r
        for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
        if r["alert"] == "SyncdHealLoop"
    ]
    loop = {
        "exp_labels": {"severity": "warning", "target": "prod"},
        "exp_annotations": {
            "summary": "syncd target prod: folders found damaged and rebuilt 3 times in 1h",
            "description": rule["annotations"]["description"],
        },
    }
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": " ".join(v)} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": "19m", "alertname": "SyncdHealLoop", "exp_alerts": []},
                    {"eval_time": "29m", "alertname": "SyncdHealLoop", "exp_alerts": []},
                    {"eval_time": "35m", "alertname": "SyncdHealLoop", "exp_alerts": [loop]},
                ],
            }
        ],
    }
    unit = tmp_path / "heal-loop.test.yml"
    unit.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_repair_beside_a_daemon_is_acted_on_at_once(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """Bit rot no stat can see, found by `syncd verify --repair` while a daemon writes the
    root: the daemon repairs the handed-over damage itself. Its sweep is an hour away, so
    only acting on the hand-over lets the command end within its --wait."""
    name = unique_name("handed")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(20, 1))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url, sweep_interval="1h", poll_interval="1h"
    )
    url = f"http://127.0.0.1:{port}"
    process = start_process(config, tmp_path / "syncd.log")
    try:
        wait_until(lambda: get(url + "/readyz")[1].startswith("synced"), "synced")
        folder = root / published.parent_run_id
        original = (folder / BIG).read_bytes()
        flip(folder / BIG, 12345, keep_mtime=True)
        env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
        fixed = run_syncd("verify", "--root", str(root), "--repair", "--wait", "60", env=env)
        log = (tmp_path / "syncd.log").read_text()
    finally:
        stop_process(process)
    assert fixed.returncode == 0, fixed.stderr
    assert "handed the damage to it" in fixed.stderr
    assert f"{published.parent_run_id}  OK" in fixed.stdout
    assert (folder / BIG).read_bytes() == original
    assert f"damage of run {published.parent_run_id} handed over in {root}: repairing" in log


def test_folders_kept_for_rollback_are_shown_as_kept_and_until_when(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """v1 -> v2 -> v3 with keep_previous 1 and gc_grace 1h: v2 is the rollback (kept while
    it is the newest previous), v1 goes an hour after it stopped being wanted. The API, the
    page and `syncd status` say so; neither is "wanted by" any more."""
    name = unique_name("kept")
    versions = [publish(mlflow_server.url, tmp_path / "v1", name, shard_mib=(1,))]
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url, gc_grace="1h", keep_previous=1
    )
    url = f"http://127.0.0.1:{port}"

    def kept() -> dict[str, Any]:
        (target,) = json.loads(get(url + "/api/status")[1])["targets"]
        return {k["run_id"]: k for k in target["kept_for_rollback"]}

    process = start_process(config, tmp_path / "syncd.log")
    try:
        for label in ("v2", "v3"):
            wait_until(lambda: get(url + "/readyz")[1].startswith("synced"), "synced")
            versions.append(publish(mlflow_server.url, tmp_path / label, name, shard_mib=(1,)))
            wait_until(lambda: len(kept()) == len(versions) - 1, f"{label}: previous kept")
        wait_until(lambda: get(url + "/readyz")[1].startswith("synced"), "v3 synced")
        now, shown = time.time(), kept()
        page = get(url + "/")[1]
    finally:
        stop_process(process)
    v1, v2, v3 = (v.parent_run_id for v in versions)
    assert set(shown) == {v1, v2}
    assert shown[v2]["removed_after"] is None
    assert shown[v2]["was"] == f"{name} v2"
    assert now + 3500 < shown[v1]["removed_after"] <= now + 3600
    assert page.count("kept for rollback") == 2
    assert "kept while it is among the newest keep_previous of its model" in page
    assert "removed in 60m (gc_grace)" in page or "removed in 59m (gc_grace)" in page

    listing = run_syncd("status", "--root", str(root), env=clean_env()).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert "wanted by " + name in lines[v3]
    for run_id, number in ((v1, 1), (v2, 2)):
        assert "kept for rollback, no target wants it since " in lines[run_id]
        assert f"(was {name} alias production v{number})" in lines[run_id]


def test_publish_says_what_it_did_and_nothing_else(mlflow_server: Any, tmp_path: Path) -> None:
    """No tqdm bars, run URLs, CloudPickle cautions or "unexpected error" from MLflow's pip
    inference: the one line syncd prints, and a model the daemon side can resolve."""
    name = unique_name("quiet")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    published = run_syncd(
        "publish", "--model", name, "--folder", str(folder), "--alias", "production", env=env
    )
    assert published.returncode == 0, published.stderr
    (line,) = published.stdout.splitlines()
    assert line.startswith(f"{name} v1: binaries on run ")
    assert line.endswith(", alias production set")
    for noise in ("it/s", "View run", "unexpected error", "CloudPickle", "WARNING"):
        assert noise not in published.stderr + published.stdout, published.stderr
    assert run_sync(name, tmp_path / "root", env).returncode == 0


def test_a_range_repair_is_told_the_same_way_before_and_after(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """One flipped byte in a 20 MiB shard: the log's "syncing" and "in place" lines both say
    one file patched by range, none whole, and the same byte count."""
    name = unique_name("patch")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(20, 1))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    url, log = f"http://127.0.0.1:{port}", tmp_path / "syncd.log"
    process = start_process(config, log)
    try:
        wait_until(lambda: get(url + "/readyz")[1].startswith("synced"), "synced")
        flip(root / published.parent_run_id / BIG, 12345, keep_mtime=False)
        wait_until(
            lambda: any(
                "in place" in line and "patched by range" in line
                for line in log.read_text().splitlines()
            ),
            "repaired",
        )
    finally:
        stop_process(process)
    lines = log.read_text().splitlines()
    (announced,) = [line for line in lines if "patched by range" in line and "syncing" in line]
    (done,) = [line for line in lines if "patched by range" in line and "in place" in line]
    said = "(0 file(s) whole, 1 patched by range)"
    assert said in announced
    assert said in done
    to_download = announced.split(": ")[-1].split(" bytes to download")[0]
    assert f"in place: {to_download} bytes downloaded {said}" in done


@pytest.mark.parametrize("command", ["run", "sync", "verify", "status", "publish", "fetch", "demo"])
def test_every_subcommand_help_says_what_it_does(command: str) -> None:
    result = run_syncd(command, "--help", env=clean_env())
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: syncd {command}")
    assert len(description.split()) >= 10, result.stdout  # a sentence, not the flag list
    assert not description.lstrip().startswith(("options:", "positional arguments:"))


def test_readyz_in_place_holds_a_startup_gate_until_the_folder_is_on_disk(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """The sidecar's startup probe: 503 while S3 cannot deliver the folder (plain /readyz
    answers too, for its own reasons), 200 once the folder and its manifest are on disk."""
    name = unique_name("gate")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    url = f"http://127.0.0.1:{port}"
    dead = clean_env(MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    process = start_process(config, tmp_path / "dead.log", env=dead)
    try:
        wait_until(lambda: get(url + "/readyz")[0] == 503, "up, S3 down")
        wait_until(lambda: "storage_unreachable" in get(url + "/readyz")[1], "S3 named")
        code, text = get(url + "/readyz?in_place")
    finally:
        stop_process(process)
    assert code == 503
    assert text.startswith("not_in_place: ")
    process = start_process(config, tmp_path / "live.log", env=clean_env())
    try:
        wait_until(lambda: get(url + "/readyz?in_place")[0] == 200, "in place")
        text = get(url + "/readyz?in_place")[1]
    finally:
        stop_process(process)
    assert text == "in_place: 1 folder(s) in place\n"
    assert (root / published.parent_run_id).is_dir()

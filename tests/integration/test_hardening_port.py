"""What reaches the daemon from outside, done to the real `syncd run` process: a flood of idle
connections, secrets in its configuration, oversized inputs, forged webhooks; and a disk
that is full at the manifest's write."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.app.embedded import free_port
from tests.support.cli import clean_env, run_sync, sync_command
from tests.support.daemon import (
    daemon_config,
    get,
    scraped,
    start_process,
    stop_process,
    wait_until,
)
from tests.support.disk import fill_leaving
from tests.support.models import publish, unique_name

IDLE = 1030  # the count that took the daemon down under `ulimit -n 1024`


def open_file_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@pytest.fixture
def many_sockets() -> Iterator[list[socket.socket]]:
    """Room in this process for the idle connections, closed after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 200:
        pytest.skip(f"this process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_idle(port: int, count: int, sockets: list[socket.socket]) -> None:
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_idle_connections_and_half_sent_requests_cannot_take_the_daemon_down(
    mlflow_server: Any, tmp_path: Path, many_sockets: list[socket.socket]
) -> None:
    name = unique_name("idle")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url,
        http={"host": "127.0.0.1", "port": port, "header_timeout": "3s"},
    )  # fmt: skip
    process = start_process(config, tmp_path / "syncd.log", nofile=(1024, 4096))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(url + "/readyz")[0] == 200, "ready")
        assert open_file_limit(process.pid) == (4096, 4096)  # raised to the hard limit
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        many_sockets.append(half)
        connect_idle(port, IDLE, many_sockets)
        # Over the cap (256) closed at once; the rest, and the half-sent head, within the
        # head timeout: every one of them ends, and the daemon serves again.
        for sock in many_sockets:
            assert closed_by_server(sock)
        assert process.poll() is None
        wait_until(lambda: get(url + "/healthz")[0] == 200, "serving again")
        assert get(url + "/readyz")[0] == 200
    finally:
        stop_process(process)
    log = (tmp_path / "syncd.log").read_text()
    assert "Traceback" not in log
    assert "connections open, the most allowed" in log


def test_running_out_of_descriptors_is_logged_and_retried(
    mlflow_server: Any, tmp_path: Path, many_sockets: list[socket.socket]
) -> None:
    name = unique_name("emfile")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url,
        poll_interval="0.2s", sweep_interval="0.2s",
        http={"host": "127.0.0.1", "port": port, "max_connections": 5000,
              "header_timeout": "1h"},
    )  # fmt: skip
    log = tmp_path / "syncd.log"
    process = start_process(config, log, nofile=(300, 300))  # a hard limit: nothing to raise
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(url + "/readyz")[0] == 200, "ready")
        connect_idle(port, 330, many_sockets)  # more than the daemon has descriptors for
        wait_until(lambda: "too many open files" in log.read_text(), "EMFILE met and logged")
        assert process.poll() is None
        for sock in many_sockets:
            sock.close()
        many_sockets.clear()
        wait_until(lambda: get(url + "/healthz")[0] == 200, "serving again")
        metrics = get(url + "/metrics")[1]
        assert process.poll() is None
    finally:
        stop_process(process)
    errors = [line for line in metrics.splitlines() if line.startswith("syncd_background_errors")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in errors if "_total" in line) >= 1


SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value-1",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-value-2",
    "DOMINO_USER_API_KEY": "domino-key-value-3",
    "SYNCD_HTTP__WEBHOOK_SECRET": "webhook-secret-value-4",
}
HOOK_URL_SECRETS = ("hookuser", "hookpass", "T0SECRET", "B0SECRET", "XOXBTOKEN", "qsecret")


def test_no_secret_reaches_a_log_a_page_or_a_hooks_environment(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("secrets")
    publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port, closed = tmp_path / "llm-models", free_port(), free_port()
    seen = tmp_path / "hook-env.json"
    hook_url = (
        f"http://hookuser:hookpass@127.0.0.1:{closed}/services/T0SECRET/B0SECRET/XOXBTOKEN"
        "?q=qsecret"
    )
    dump = f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    config = daemon_config(tmp_path, root, port, name, mlflow_server.url)
    document = yaml.safe_load(config.read_text())
    document["targets"][0]["after_sync"] = [
        {"webhook": {"url": hook_url}, "attempts": 2},
        {"command": ["python3", "-c", dump], "pass_env": ["EXTRA_FOR_HOOK"]},
    ]
    config.write_text(json.dumps(document))
    env = {**os.environ, **SECRETS, "EXTRA_FOR_HOOK": "passed-on-purpose"}
    log = tmp_path / "syncd.log"
    process = start_process(config, log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: seen.exists(), "the command hook ran")

        def hooks_reported() -> bool:
            folders = json.loads(get(url + "/api/status")[1])["targets"][0]["folders"]
            return any(len(folder.get("hooks") or []) == 2 for folder in folders)

        wait_until(hooks_reported, "both hooks reported")
        said = [log.read_text(), get(url + "/api/status")[1], get(url + "/")[1]]
    finally:
        stop_process(process)
    said.append(log.read_text())
    for text in said:
        for secret in (*SECRETS.values(), *HOOK_URL_SECRETS):
            assert secret not in text
    assert f"POST http://127.0.0.1:{closed}" in said[1]  # the webhook is named by its host
    hook_env = json.loads(seen.read_text())
    assert not set(SECRETS) & set(hook_env)
    assert hook_env["EXTRA_FOR_HOOK"] == "passed-on-purpose"
    assert hook_env["SYNCD_MODEL"] == name
    assert "PATH" in hook_env


def test_a_tracking_uri_with_a_password_is_never_printed(tmp_path: Path) -> None:
    down = f"http://alice:hunter2secret@127.0.0.1:{free_port()}"
    env = clean_env(MLFLOW_TRACKING_URI=down, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    result = run_sync("any-model", tmp_path / "root", env)
    assert result.returncode != 0
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "alice" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("run_id_chars", "refusal"),
    [(2_000_000, "refused (a small JSON document"), (300_000, "is not a 32-hex run id")],
)
def test_an_oversized_model_context_gets_one_short_line(
    mlflow_server: Any, tmp_path: Path, run_id_chars: int, refusal: str
) -> None:
    name = unique_name("bigctx")
    publish(
        mlflow_server.url, tmp_path / "src", name, shard_mib=(1,), context_run_id="a" * run_id_chars
    )
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    process = subprocess.run(
        ["/usr/bin/time", "-f", "maxrss_kb=%M", *sync_command(name, tmp_path / "root")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 1
    lines = [x for x in process.stderr.strip().splitlines() if not x.startswith("Command ")]
    assert lines[-1].startswith("maxrss_kb=")
    assert int(lines[-1].removeprefix("maxrss_kb=")) < 300_000  # not the context times 10
    assert refusal in lines[-2]
    assert max(len(line) for line in lines) < 1000  # the value is quoted, cut
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").glob("[0-9a-f]*"))


def test_forged_webhooks_are_counted_and_logged_once_a_minute(
    mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name("forged")
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url,
        http={"host": "127.0.0.1", "port": port, "webhook_secret": "the-real-secret"},
    )  # fmt: skip
    log = tmp_path / "syncd.log"
    process = start_process(config, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(url + "/healthz")[0] == 200, "serving")
        for index in range(40):
            request = urllib.request.Request(
                url + "/webhooks/mlflow",
                data=b'{"entity": "model_version", "action": "created"}',
                headers={
                    "Content-Type": "application/json",
                    "X-MLflow-Signature": f"v1,forged{index}",
                    "X-MLflow-Delivery-Id": str(index),
                    "X-MLflow-Timestamp": "x" * 5000,
                },
                method="POST",
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10).close()
            assert refused.value.code in (400, 401, 403)
        metrics = get(url + "/metrics")[1]
    finally:
        stop_process(process)
    assert scraped(metrics, 'syncd_webhooks_total{result="rejected"}') == 40.0
    refused = [line for line in log.read_text().splitlines() if "webhook refused" in line]
    assert len(refused) == 1
    assert len(refused[0]) < 600


def test_a_full_disk_at_the_manifest_never_leaves_a_folder_without_it(
    mlflow_server: Any, small_disk: Path, tmp_path: Path
) -> None:
    name = unique_name("fullmf")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)
    root = small_disk / "llm-models"
    folder = root / published.parent_run_id
    manifest = root / ".syncd" / "manifests" / f"{published.parent_run_id}.json"
    # How many pages the build takes, measured on a roomy disk first.
    assert run_sync(name, root, env).returncode == 0
    pages = sum(-(-p.stat().st_size // 4096) for p in folder.iterdir())
    outcomes = set()
    for spare in range(0, 4):  # pages beyond the files': the lock, a part map, the manifest
        subprocess.run(["rm", "-rf", str(root)], check=True)
        filler = fill_leaving(small_disk, (pages + spare) * 4096)
        failed = run_sync(name, root, env)
        outcomes.add(failed.returncode)
        # Whatever write met the full disk, a published folder has its manifest.
        assert not folder.exists() or manifest.exists(), failed.stderr
        if failed.returncode:
            assert "no space left" in failed.stderr.strip().splitlines()[-1]
        filler.unlink()
        again = run_sync(name, root, env)
        assert again.returncode == 0, again.stderr
        assert "did not create" not in again.stderr
        quarantine = root / ".syncd" / "quarantine"
        assert not quarantine.exists() or not any(quarantine.iterdir())
    assert 1 in outcomes  # the disk did run out, somewhere near the manifest


def test_quarantine_is_emptied_after_quarantine_keep(mlflow_server: Any, tmp_path: Path) -> None:
    name = unique_name("qkeep")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port = tmp_path / "llm-models", free_port()
    config = daemon_config(
        tmp_path, root, port, name, mlflow_server.url, quarantine_keep="2s", sweep_interval="0.5s"
    )
    log = tmp_path / "syncd.log"
    process = start_process(config, log)
    url = f"http://127.0.0.1:{port}"
    quarantine = root / ".syncd" / "quarantine"
    try:
        wait_until(lambda: get(url + "/readyz")[0] == 200, "ready")
        (root / published.parent_run_id / "planted.txt").write_text("someone's")
        wait_until(lambda: any(quarantine.iterdir()), "the planted file set aside")
        wait_until(lambda: not any(quarantine.iterdir()), "quarantine emptied after 2s")
        metrics = get(url + "/metrics")[1]
    finally:
        stop_process(process)
    assert scraped(metrics, 'syncd_quarantine_bytes{target="prod"}') == 0.0
    assert "from quarantine after" in log.read_text()

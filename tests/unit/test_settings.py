from pathlib import Path
from typing import Any

import pytest

from syncd.errors import ConfigError
from syncd.settings import load_settings
from syncd.units import parse_duration, parse_size

MINIMAL = """
poll_interval: 30s
targets:
  - name: prod
    root: /domino/datasets/domino-models-prod/llm-models
    alias: production
    models: ["TinyLlama-MODEL"]
http: {host: 0.0.0.0, port: 8888}
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_S3_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "DOMINO_API_HOST",
        "DOMINO_API_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    return path


def test_design_card_minimal_file_loads(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.poll_interval == 30
    (target,) = settings.targets
    assert target.alias == "production"
    assert target.artifact_path == "model"
    assert settings.http.host == "0.0.0.0"


def test_environment_overrides_nested_keys(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNCD_S3__ARTIFACTS_DESTINATION", "s3://domino-blobs/mlflow")
    clean_env.setenv("SYNCD_S3__MAX_CONCURRENCY", "32")
    clean_env.setenv("SYNCD_POLL_INTERVAL", "1m")
    settings = load_settings(write(tmp_path, MINIMAL + "s3: {part_size: 8MiB}\n"))
    assert settings.s3.artifacts_destination == "s3://domino-blobs/mlflow"
    assert settings.s3.max_concurrency == 32
    assert settings.s3.part_size == 8 * 1024 * 1024  # the file's nested value survives
    assert settings.poll_interval == 60


def test_standard_variables_honoured(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://s3:9000")
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert settings.s3.endpoint_url == "http://s3:9000"
    clean_env.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")
    assert load_settings(write(tmp_path, MINIMAL)).s3.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (MINIMAL.replace("poll_interval: 30s", "poll_interval: soon"), "poll_interval"),
        (
            MINIMAL.replace("alias: production", "stage: Production\n    alias: production"),
            "targets.0",
        ),
        (MINIMAL.replace("    alias: production\n", ""), "targets.0"),
        (MINIMAL + "colour: blue\n", "colour: unknown key"),
        (MINIMAL.replace('models: ["TinyLlama-MODEL"]', "models: []"), "targets.0.models"),
        (MINIMAL + "s3: {artifacts_destination: 'gs://x'}\n", "s3.artifacts_destination"),
        (MINIMAL + "s3: {max_concurrency: 0}\n", "s3.max_concurrency"),
        (MINIMAL.replace("name: prod", "name: 'p r o d'"), "targets.0.name"),
        (MINIMAL.replace("root: ", "artifact_path: ../x\n    root: "), "targets.0.artifact_path"),
        (
            MINIMAL
            + "targets: [{name: a, root: /a, alias: x, models: [m]},"
            + " {name: a, root: /b, alias: x, models: [m]}]\n",
            "unique",
        ),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, text: str, names: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


def test_unparseable_yaml(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not valid YAML at line 3: expected"):
        load_settings(write(tmp_path, "targets:\n  - [unclosed\n"))


def test_missing_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_bad_environment_value_names_the_key(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNCD_S3__MAX_CONCURRENCY", "many")
    with pytest.raises(ConfigError, match=r"s3\.max_concurrency"):
        load_settings(write(tmp_path, MINIMAL))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("5m", 300), ("1.5h", 5400), ("250ms", 0.25), (7, 7)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("8MiB", 8 << 20), ("64 KiB", 64 << 10), (1024, 1024), ("1GB", 10**9)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_shipped_example_config_is_valid(clean_env: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "syncd.yaml"
    settings = load_settings(example)
    assert [target.name for target in settings.targets] == ["prod"]
    assert settings.http.port == 8888


@pytest.mark.parametrize(
    ("hook", "names"),
    [
        ({"slack": {"channel": "x"}}, "targets.0.after_sync.0.slack: unknown key"),
        ({"domino_restart": {"model": "m"}}, "targets.0.after_sync.0.domino_restart.model_id"),
        ({"webhook": {"url": "ftp://hooks"}}, "must be an http(s):// URL"),
        ({"webhook": {"url": "https://h.example/x", "secret_env": "NOPE_UNSET"}}, "NOPE_UNSET"),
        ({}, "each after_sync entry is one of domino_restart, webhook or command"),
        ({"command": []}, "targets.0.after_sync.0.command"),
        (
            {"webhok": {"url": "https://h.example/x"}},
            "webhok: unknown key (did you mean 'webhook'?)",
        ),
        ({"webhook": {"url": "https://h.example/x"}, "command": ["true"]}, "has webhook, command"),
        # A time limit is a command's: on a webhook it is a mistake, not ignored.
        ({"webhook": {"url": "https://h.example/x"}, "timeout": "5s"}, "0.timeout: unknown key"),
    ],
)
def test_bad_hooks_are_refused_naming_the_key(
    clean_env: pytest.MonkeyPatch, hook: dict[str, Any], names: str
) -> None:
    clean_env.setenv("DOMINO_API_HOST", "http://domino.example")
    target = {"name": "p", "root": "/r", "alias": "a", "models": ["m"], "after_sync": [hook]}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"targets": [target]})
    assert names in str(caught.value)


def test_a_restart_hook_needs_the_domino_api(clean_env: pytest.MonkeyPatch) -> None:
    restart = {"domino_restart": {"model": "m", "model_id": "a", "model_version_id": "b"}}
    target = {"name": "p", "root": "/r", "alias": "a", "models": ["m"], "after_sync": [restart]}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"targets": [target]})
    assert "DOMINO_API_HOST" in str(caught.value)

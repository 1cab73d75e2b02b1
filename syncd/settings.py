"""Configuration: a YAML file plus SYNCD_* variables; the only module that reads the env.

The schema is here; what MLflow's, AWS's, KServe's and Domino's own variables mean is
`environment.py`; durations, sizes and `${VAR}` are `units.py`; a config's problems, each in
one line, are `config_problems.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from syncd.config_problems import describe_validation, secret_variables, unknown_variables
from syncd.environment import standard_environment
from syncd.errors import ConfigError, cut, quoted
from syncd.hook_settings import (
    CommandEntry,
    DominoRestartEntry,
    DominoRestartHook,
    HookSettings,
    WebhookEntry,
    WebhookHook,
)
from syncd.units import Bytes, Seconds, Strict, expand_variables, parse_duration

__all__ = [
    "CommandEntry",
    "DominoRestartEntry",
    "DominoRestartHook",
    "DominoSettings",
    "HookSettings",
    "HttpSettings",
    "MlflowSettings",
    "ResolutionSettings",
    "S3Settings",
    "Settings",
    "TargetSettings",
    "WebhookEntry",
    "WebhookHook",
    "load_settings",
    "parse_duration",
]


class DominoSettings(Strict):
    """The Domino API for `domino_restart` hooks (DOMINO_API_HOST / DOMINO_API_PROXY)."""

    api_host: str | None = None
    # Inside a Domino run, a proxy that adds the caller's credentials: no key is sent.
    api_proxy: str | None = None
    # An API key set for syncd itself (X-Domino-Api-Key).
    api_key: SecretStr | None = None
    # A bearer token (a service account's or a personal access token; DOMINO_API_TOKEN),
    # for syncd running outside a Domino run.
    api_token: SecretStr | None = None
    # Inside a run, Domino serves the run's short-lived token here; fetched for each restart.
    access_token_url: str = "http://localhost:8899/access-token"
    # The legacy key Domino sets in runs (DOMINO_USER_API_KEY): the last resort.
    user_api_key: SecretStr | None = None
    # For restarts of a Model API's active version (DOMINO_PROJECT_ID, set in every run).
    project_id: str | None = None


class TargetSettings(Strict):
    """One dataset folder kept in step with one alias (or stage) of a set of models."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    root: Path
    alias: str | None = None
    stage: str | None = None
    models: list[str] = Field(min_length=1)
    artifact_path: str = "model"
    # Aliases synced ahead of time into the same root (e.g. [staging, candidate]): a later
    # promotion to one of their versions costs no bytes. Never reported as serving.
    prefetch: list[str] = Field(default_factory=list)
    # Run once per (model, version) that becomes in place for the serving pointer.
    after_sync: list[HookSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _alias_xor_stage(self) -> TargetSettings:
        if (self.alias is None) == (self.stage is None):
            raise ValueError("set exactly one of alias or stage")
        if self.alias is not None and self.alias in self.prefetch:
            raise ValueError(f"prefetch repeats the serving alias {self.alias!r}")
        return self

    @field_validator("root", mode="before")
    @classmethod
    def _expand_root(cls, value: object) -> object:
        # `${NAME}` / `${NAME:-default}`: one config file for Domino's Git-based and DFS
        # projects, which mount datasets in different places (config/domino/app.sh says where).
        return expand_variables(value) if isinstance(value, str) else value

    @field_validator("artifact_path")
    @classmethod
    def _relative_subpath(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"artifact_path must be a plain relative path, got {value!r}")
        return "/".join(parts)

    @property
    def selector(self) -> str:
        """What this target follows, for logs: `alias production` or `stage Production`."""
        return f"alias {self.alias}" if self.alias else f"stage {self.stage}"


class S3Settings(Strict):
    """How objects are read from S3 and how they are checked."""

    endpoint_url: str | None = None
    region: str | None = None
    # Where `mlflow-artifacts:/` URIs live in S3 (the server's --artifacts-destination); when
    # set, proxied runs are read straight from S3 instead of through the MLflow server.
    artifacts_destination: str | None = None
    max_concurrency: int = Field(default=16, ge=1, le=512)
    part_size: Bytes = 16 * 1024 * 1024
    chunk_size: Bytes = 1024 * 1024
    max_attempts: int = Field(default=5, ge=1, le=50)
    verify: Literal["checksum", "size"] = "checksum"
    # Ranged GETs pumped by threads over blocking sockets: about half the CPU of streaming them
    # through the event loop. Off (and by default behind an HTTP proxy, which only aiobotocore
    # speaks), aiobotocore reads them too.
    threaded_reads: bool = True
    # Ranges written (and a whole-object MD5's read-back read) with O_DIRECT, past the page
    # cache, on ext4 and xfs; elsewhere through it. Less than half the CPU per byte.
    direct_writes: bool = True
    ca_bundle: str | None = None  # AWS_CA_BUNDLE: TLS roots for a private S3 endpoint
    # False: TLS certificates are not checked (S3_VERIFY_SSL=0, KServe's variable).
    verify_ssl: bool = True

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        # Without a scheme botocore fails deep inside the first request, with a traceback.
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"must be an http(s):// URL such as http://{cut(value, 60)}, got {quoted(value)}"
            )
        return value

    @field_validator("artifacts_destination")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError(f"must be an s3:// URI, got {value!r}")
        return value.rstrip("/") if value else value


class MlflowSettings(Strict):
    """Where the registry is; credentials come from MLflow's own variables."""

    tracking_uri: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    # Per request, and how often MLflow's client retries one: a daemon polls again anyway,
    # so it fails fast instead of MLflow's default minutes of retries.
    timeout: Seconds = 30.0
    max_retries: int = Field(default=2, ge=0, le=20)
    # auto: syncd's own REST reads (no `import mlflow`: ~0.7 s off a one-shot start) unless an
    # MLflow auth or request-header plugin is installed or MLFLOW_TRACKING_AUTH is set, which
    # only MLflow's client applies; rest / mlflow: that one always.
    client: Literal["auto", "rest", "mlflow"] = "auto"

    @field_validator("tracking_uri")
    @classmethod
    def _http_uri(cls, value: str | None) -> str | None:
        # Anything else (a path, sqlite:///) would make MLflow's client create a local store
        # in the working directory: never what a deployer meant.
        if value is not None and not value.startswith(("http://", "https://", "databricks")):
            raise ValueError(f"must be the MLflow server's http(s):// URL, got {value!r}")
        return value.rstrip("/") if value else value


class ResolutionSettings(Strict):
    """How a registered version is traced back to the run that holds the binaries."""

    context_path: str = "artifacts/model_context.json"
    # A context naming a run other than the child's nested parent is someone else's binaries;
    # refused unless this is relaxed.
    allow_foreign_parent: bool = False


class HttpSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8888, ge=0, le=65535)
    enabled: bool = True
    # The secret MLflow webhooks are created with; /webhooks/mlflow refuses every delivery
    # while it is unset (an unsigned endpoint would let anyone drive registry polls).
    webhook_secret: SecretStr | None = None
    # Whoever reaches the port must not take the daemon's file descriptors: connections
    # over the cap are closed at once, and a request head not sent whole in time is dropped.
    max_connections: int = Field(default=256, ge=1, le=65536)
    header_timeout: Seconds = 30.0


class Settings(BaseSettings):
    """The whole configuration of a syncd process."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCD_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    poll_interval: Seconds = 30.0
    targets: list[TargetSettings] = Field(default_factory=list)
    http: HttpSettings = Field(default_factory=HttpSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    resolution: ResolutionSettings = Field(default_factory=ResolutionSettings)
    domino: DominoSettings = Field(default_factory=DominoSettings)
    max_parallel_syncs: int = Field(default=2, ge=1, le=64)
    # Self-healing: watchdog events wake the reconciler at once; the sweep (sizes and mtimes
    # against the manifest) catches what NFS never reports; deep verify re-hashes everything.
    watch: bool = True
    sweep_interval: Seconds = 60.0
    deep_verify_interval: Seconds | None = None
    deep_verify_rate: Bytes = 100 * 1024 * 1024
    # Retention: folders no target wants any more go after gc_grace, but the newest
    # keep_previous of each model stay for a fast rollback.
    gc: bool = True
    gc_grace: Seconds = 3600.0
    keep_previous: int = Field(default=1, ge=0, le=100)
    # What syncd set aside (planted links, files it did not put in a folder, folders it did
    # not create) stays in {root}/.syncd/quarantine this long for a person to look at.
    quarantine_keep: Seconds = 7 * 86400.0
    lock_retry_interval: Seconds = 5.0
    # How often each folder in place is compared with its source's listing (the only S3
    # requests an idle daemon makes), spread over the interval rather than all at once.
    remote_check_interval: Seconds = 3600.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _domino_for_restarts(self) -> Settings:
        restarts = [
            h.domino_restart
            for t in self.targets
            for h in t.after_sync
            if isinstance(h, DominoRestartEntry)
        ]
        if restarts and not (self.domino.api_host or self.domino.api_proxy):
            raise ValueError(
                "a domino_restart hook needs DOMINO_API_HOST (with DOMINO_USER_API_KEY) or "
                "DOMINO_API_PROXY"
            )
        for restart in restarts:
            if restart.model_version_id is None and not (
                restart.project_id or self.domino.project_id
            ):
                raise ValueError(
                    f"domino_restart of model {restart.model_id} has no model_version_id: set "
                    "project_id (or DOMINO_PROJECT_ID) to restart its active version"
                )
        return self

    @model_validator(mode="after")
    def _unique_targets(self) -> Settings:
        names = [target.name for target in self.targets]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"target names must be unique, repeated: {', '.join(duplicated)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, as operators expect when they override one key.
        return (env_settings, init_settings)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from the standard variables, then the YAML file, then overrides, then SYNCD_*."""
    environ = dict(os.environ)
    data = standard_environment(environ)
    source: str | None = None
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None)
            raise ConfigError(
                f"{path}: not valid YAML{where}" + (f": {problem}" if problem else "")
            ) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = _merge(data, loaded)
    if overrides:
        data = _merge(data, overrides)
    strays = unknown_variables(Settings, environ, secret_variables(data))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        lines = describe_validation(Settings, exc, source, environ) + strays
        raise ConfigError("\n".join(lines)) from exc
    if strays:
        raise ConfigError("\n".join(strays))
    return settings

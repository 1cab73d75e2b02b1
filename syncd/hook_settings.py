"""The settings of one `after_sync` entry: a model per kind of hook, told apart by its one
key (`- webhook: {...}`, `- command: [...]`, `- domino_restart: {...}`), as a pydantic
tagged union. A new kind is a model here, a line in `HookSettings`, and its class in
`syncd.reconcile.hooks.kinds`."""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from syncd.config_problems import TAG
from syncd.units import Seconds, Strict

__all__ = [
    "HOOK_KINDS",
    "CommandEntry",
    "DominoRestartEntry",
    "DominoRestartHook",
    "HookSettings",
    "WebhookEntry",
    "WebhookHook",
]


class DominoRestartHook(Strict):
    """Stop, then start, the Domino Model API that serves `model` once its folder is in place."""

    model: str = Field(min_length=1)
    model_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    # Unset: the Model API's active version, looked up in its project at each restart, so a
    # newly activated Domino model version needs no change here.
    model_version_id: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    project_id: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    stop_timeout: Seconds = 600.0  # how long to wait for the deployment to stop
    # LLM endpoints build and load slowly: the hook succeeds only once Domino says Running.
    start_timeout: Seconds = 900.0
    poll_interval: Seconds = 5.0


class WebhookHook(Strict):
    """POST a signed JSON document about the folder to `url`."""

    url: str
    secret: SecretStr | None = None
    # The secret from an environment variable of this name instead of the file.
    secret_env: str | None = None
    timeout: Seconds = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 10:
            # Not the value: a mistyped Slack URL still carries its token.
            raise ValueError(
                f"must be an http(s):// URL (got {len(value)} characters that are not)"
            )
        return value

    @model_validator(mode="after")
    def _secret_from_environment(self) -> WebhookHook:
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ValueError(f"secret_env names {self.secret_env}, which is not set")
            self.secret = SecretStr(value)
        return self


class _HookEntry(Strict):
    attempts: int = Field(default=5, ge=1, le=20)


class DominoRestartEntry(_HookEntry):
    """`- domino_restart: {...}`: restart a Domino Model API onto the folder."""

    kind: ClassVar[str] = "domino_restart"
    domino_restart: DominoRestartHook


class WebhookEntry(_HookEntry):
    """`- webhook: {...}`: a signed POST (Slack, Teams, anything else)."""

    kind: ClassVar[str] = "webhook"
    webhook: WebhookHook


class CommandEntry(_HookEntry):
    """`- command: [argv...]`: a program run with the SYNCD_* facts in its environment."""

    kind: ClassVar[str] = "command"
    command: list[str] = Field(min_length=1)
    timeout: Seconds = 300.0  # its time limit
    # Variables it inherits beyond PATH, HOME, the locale and the SYNCD_* facts.
    pass_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list
    )


HOOK_KINDS = ("domino_restart", "webhook", "command")


class _NoKind(Strict):
    """An entry naming no kind, or several: refused, saying which."""

    kind: ClassVar[str] = "none"  # never built: its validator always refuses
    domino_restart: Any = None
    webhook: Any = None
    command: Any = None
    attempts: Any = None

    @model_validator(mode="after")
    def _refused(self) -> _NoKind:
        kinds = [kind for kind in HOOK_KINDS if getattr(self, kind) is not None]
        raise ValueError(
            "each after_sync entry is one of domino_restart, webhook or command"
            + (f" (this one has {', '.join(kinds)})" if kinds else "")
        )


def _hook_kind(value: Any) -> str:
    """The union member an entry is, by the one kind key it has."""
    if isinstance(value, _HookEntry):
        return TAG + str(getattr(value, "kind", ""))
    kinds = [kind for kind in HOOK_KINDS if isinstance(value, dict) and kind in value]
    return TAG + (kinds[0] if len(kinds) == 1 else "none")


# One `after_sync` entry: a model per kind, told apart by its key (a new kind is a model here,
# a tag, and its class in syncd.reconcile.hooks.kinds).
HookSettings = Annotated[
    Annotated[DominoRestartEntry, Tag(TAG + "domino_restart")]
    | Annotated[WebhookEntry, Tag(TAG + "webhook")]
    | Annotated[CommandEntry, Tag(TAG + "command")]
    | Annotated[_NoKind, Tag(TAG + "none")],
    Discriminator(_hook_kind),
]

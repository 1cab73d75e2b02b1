"""The exceptions syncd raises: one base, a short tree, data on attributes."""

from __future__ import annotations

import errno

__all__ = [
    "RETRY_REASONS",
    "ChecksumMismatchError",
    "ConfigError",
    "HookError",
    "LocalStoreError",
    "LocalWriteError",
    "ObjectChangedError",
    "RegistryError",
    "RegistryNotFoundError",
    "ResolutionError",
    "RetriesExceededError",
    "RetryableError",
    "SourceError",
    "SourceMissingError",
    "SyncdError",
    "TransferError",
    "UnsafeKeyError",
    "UsageError",
    "WebhookRejectedError",
    "cut",
    "describe_os_error",
    "is_terminal",
    "is_unreachable",
    "primary_error",
    "quoted",
]


# What one quoted value or one message may take of a log line, a page or /api/status: values
# come from outside (a run id in a model_context.json, an object key) and may be megabytes.
QUOTE_LIMIT = 200
MESSAGE_LIMIT = 4000


def cut(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` whole when short, else its start and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\u2026 ({len(text)} characters)"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` for a message, cut to about `limit` characters."""
    return cut(repr(value), limit)


class SyncdError(Exception):
    """Base of every error syncd means to report to a person (no traceback needed).

    A message is cut to MESSAGE_LIMIT characters whatever it quotes."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(cut(a, MESSAGE_LIMIT) if isinstance(a, str) else a for a in args))


class ConfigError(SyncdError):
    """The configuration is malformed; the message names the key."""


class UsageError(SyncdError):
    """The command line is wrong (arguments a command cannot take): exit 2, like argparse."""


class RegistryError(SyncdError):
    """The MLflow registry could not be read (down, refused, unknown model)."""


class RegistryNotFoundError(RegistryError):
    """The registry answered that the model, version or run does not exist."""


class ResolutionError(RegistryError):
    """A model version cannot be resolved to a parent run we are willing to sync.

    `version` is None when the failure comes before a version is known (no such model or
    alias), so messages never show a placeholder.
    """

    def __init__(
        self, model: str, version: str | None, reason: str, store_unreachable: bool = False
    ) -> None:
        where = f"{model} version {version}" if version is not None else model
        super().__init__(f"{where}: {reason}")
        self.model = model
        self.version = version
        self.reason = reason
        # The artifact store (not the registry) could not be reached to read model_context.json.
        self.store_unreachable = store_unreachable


class SourceError(SyncdError):
    """The artifact source cannot be listed or is not usable (empty, unsupported scheme)."""


class SourceMissingError(SourceError):
    """The source is gone or refused (404, 403, an empty listing): no retry can change it."""


class UnsafeKeyError(SourceError):
    """An object key would be written outside its run folder."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"refusing object key {quoted(key)}: {reason}")
        self.key = key
        self.reason = reason


class TransferError(SyncdError):
    """A download failed."""


class ChecksumMismatchError(TransferError):
    """The bytes downloaded do not match what S3 says the object holds."""

    def __init__(self, key: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(f"{key}: {algorithm} mismatch, expected {expected}, got {actual}")
        self.key = key
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class ObjectChangedError(TransferError):
    """The object was replaced while it was being downloaded (IfMatch failed)."""

    def __init__(self, key: str, etag: str) -> None:
        expected = f"expected ETag {etag}" if etag else "its ETag no longer matched"
        super().__init__(f"{key}: object changed during download ({expected})")
        self.key = key
        self.etag = etag


# What a retried request failed with, as the `reason` label of syncd_request_retries_total.
RETRY_REASONS = ("throttled", "server_error", "connection", "timeout", "bad_response", "other")


class RetryableError(TransferError):
    """A failure worth another attempt; `reason` is one of RETRY_REASONS (a metric label)."""

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason if reason in RETRY_REASONS else "other"


class RetriesExceededError(TransferError):
    """A request kept failing after every retry."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        # The last error usually names what it was reading already: say it once.
        said = str(last)
        head = said if said.startswith(what) else f"{what}: {said}"
        super().__init__(f"{head} (failed after {attempts} attempts)")
        self.what = what
        self.attempts = attempts
        self.last = last


class HookError(SyncdError):
    """An after-sync hook failed: final as raised (a 4xx, a missing program), but for
    `remote.domino.DominoBusyError`, which a later attempt may cure and is retried where the
    hook calls Domino (`reconcile/hooks/retry.py`)."""


class LocalStoreError(SyncdError):
    """The dataset folder cannot be written (permissions, full disk, foreign content)."""


class LocalWriteError(Exception):
    """A write to the local file failed inside a reader (a full disk, an I/O error): the
    disk's doing, not the network's, so readers pass it through and never turn it into a
    retry; the engine raises `error`, the OSError, in its place."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class WebhookRejectedError(SyncdError):
    """A delivery that is not provably from the MLflow server we trust."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook refused: {reason}")
        self.reason = reason


def is_terminal(error: BaseException) -> bool:
    """A failure no retry can change until the desired state does (or an operator asks
    again): an unsafe key, a source that is gone or refused."""
    return isinstance(error, UnsafeKeyError | SourceMissingError)


def is_unreachable(error: BaseException) -> bool:
    """The store could not be reached at all (refused, timed out, no route), as opposed to
    answering no: what /readyz reports as storage_unreachable. Looks through causes and the
    last attempt of an exhausted retry."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RetryableError) and current.reason in ("connection", "timeout"):
            return True
        if isinstance(current, RetriesExceededError):
            current = current.last
            continue
        current = current.__cause__ or current.__context__
    return False


def primary_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first syncd error, else the first error.

    Tasks cancelled because a sibling failed add nothing a person needs to read.
    """
    leaves: list[BaseException] = []

    def collect(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                collect(inner)
        else:
            leaves.append(error)

    collect(group)
    for leaf in leaves:
        if isinstance(leaf, SyncdError):
            return leaf
    return leaves[0]


def describe_os_error(exc: OSError) -> str:
    """`too many open files (EMFILE) at /path` and the like: one line, no traceback."""
    name = errno.errorcode.get(exc.errno or 0, "")
    words = (exc.strerror or str(exc)).lower()
    where = f" at {cut(str(exc.filename))}" if exc.filename else ""
    return f"{words}{f' ({name})' if name else ''}{where}"

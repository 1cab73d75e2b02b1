"""Plain words for why a remote call failed, instead of the HTTP library's nested repr."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from syncd.errors import ObjectChangedError, RetryableError, SourceError, SourceMissingError

__all__ = [
    "describe_failure",
    "error_code",
    "hide_url",
    "host_of",
    "status_error",
    "strip_userinfo",
]

# Checked in order against the text of the error and of everything it was raised from.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Connection refused|ECONNREFUSED", re.I), "connection refused (is it running?)"),
    (
        re.compile(
            r"NameResolutionError|Name or service not known|nodename nor servname|"
            r"Temporary failure in name resolution|getaddrinfo failed",
            re.I,
        ),
        "host name not found",
    ),
    (
        re.compile(r"CERTIFICATE_VERIFY_FAILED|SSLError|certificate verify", re.I),
        "TLS failed (certificate not trusted: set REQUESTS_CA_BUNDLE or AWS_CA_BUNDLE)",
    ),
    (
        re.compile(r"timed out|ReadTimeout|ConnectTimeout|TimeoutError", re.I),
        "no answer (timed out)",
    ),
    (
        re.compile(r"Connection reset|RemoteDisconnected|Connection aborted|BrokenPipe", re.I),
        "the connection was dropped",
    ),
    (
        re.compile(r"\b401\b|Unauthorized|UNAUTHENTICATED", re.I),
        "not authenticated (check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD)",
    ),
    (re.compile(r"\b403\b|PERMISSION_DENIED|Forbidden", re.I), "permission denied"),
    (re.compile(r"Network is unreachable|No route to host", re.I), "network unreachable"),
)
_LONGEST = 200


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_failure(exc: BaseException) -> str:
    """A short reason a person can act on: "connection refused (is it running?)", ...

    Falls back to the first line of the error, cut to a readable length.
    """
    texts = [f"{type(error).__name__}: {error}" for error in _chain(exc)]
    for pattern, reason in _CAUSES:
        if any(pattern.search(text) for text in texts):
            return reason
    first = (str(exc).splitlines() or [type(exc).__name__])[0].strip() or type(exc).__name__
    first = strip_userinfo(first)
    return first if len(first) <= _LONGEST else first[: _LONGEST - 1] + "…"


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.I)


def strip_userinfo(text: str) -> str:
    """`text` with the `user:password@` of every URL in it taken out."""
    return _USERINFO.sub(r"\1", text)


def hide_url(text: str, url: str) -> str:
    """`text` (an error, a result) with a secret-bearing URL in it shown as its host only.

    Slack and Teams webhook URLs carry their token in the path; an HTTP library's error may
    quote the URL as given, re-encoded, or without its query."""
    shown = host_of(url)
    parts = urlsplit(url)
    for form in sorted({url, url.split("?", 1)[0], f"{parts.netloc}{parts.path}"}, key=len)[::-1]:
        if form and form != shown:
            text = text.replace(form, shown)
    if len(parts.path) > 1:
        text = text.replace(parts.path, "/…")
    return strip_userinfo(text)


def host_of(uri: str) -> str:
    """`scheme://host:port` of a URL without credentials or path (safe to log)."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return uri
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


_RETRYABLE_CODES = {
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


# S3 and Azure Blob both say why in an XML body (`<Code>SlowDown</Code>`); GCS in JSON, where
# the status alone decides.
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


def error_code(body: bytes) -> str:
    """The error code an XML error body names, or "" (status_error's `code`)."""
    match = _ERROR_CODE.search(body)
    return match.group(1).decode(errors="replace") if match else ""


def status_error(status: int, code: str, what: str, etag: str = "") -> Exception:
    """An HTTP error answer (S3, or the MLflow artifact proxy) as a syncd error: the one table
    every read path uses.

    `code` is the S3 error code (`SlowDown`, `NoSuchKey`, ...), empty when there was no body
    (HEAD). 412: the object changed; 429, 503 and throttling codes: throttled, retried; other
    5xx and transient codes: retried; 404 and 403: final, in plain words.
    """
    label = code or str(status)
    if status == 412 or code == "PreconditionFailed":
        return ObjectChangedError(what, etag)
    if status in (429, 503) or code in _THROTTLE_CODES:
        return RetryableError(f"{what}: {label}", "throttled")
    if status >= 500 or code in _RETRYABLE_CODES:
        return RetryableError(f"{what}: {label}", "server_error")
    if status == 404 or code in _NOT_FOUND_CODES:
        return SourceMissingError(f"{what}: not found")
    if status == 403 or code in _DENIED_CODES:
        return SourceMissingError(f"{what}: access denied ({label})")
    return SourceError(f"{what}: HTTP {status} {label}")

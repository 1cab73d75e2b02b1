"""One table turns an HTTP error answer into a syncd error, for every read path."""

from __future__ import annotations

import pytest

from syncd.errors import ObjectChangedError, RetryableError, SourceError, SourceMissingError
from syncd.remote.failure import status_error


@pytest.mark.parametrize(
    ("status", "code", "kind", "reason"),
    [
        (412, "PreconditionFailed", ObjectChangedError, None),
        (412, "", ObjectChangedError, None),
        (429, "", RetryableError, "throttled"),  # once final on the aiobotocore path
        (429, "TooManyRequests", RetryableError, "throttled"),
        (503, "SlowDown", RetryableError, "throttled"),
        (503, "", RetryableError, "throttled"),
        (400, "RequestTimeout", RetryableError, "server_error"),
        (500, "InternalError", RetryableError, "server_error"),
        (502, "", RetryableError, "server_error"),
        (404, "NoSuchKey", SourceMissingError, None),
        (404, "", SourceMissingError, None),
        (403, "AccessDenied", SourceMissingError, None),
        (403, "SignatureDoesNotMatch", SourceMissingError, None),
        (400, "InvalidArgument", SourceError, None),
    ],
)
def test_status_table(status: int, code: str, kind: type[Exception], reason: str | None) -> None:
    error = status_error(status, code, "GET s3://b/k")
    assert type(error) is kind
    if reason is not None:
        assert isinstance(error, RetryableError)
        assert error.reason == reason
    assert str(error).startswith("GET s3://b/k")


def test_final_answers_say_what_in_plain_words() -> None:
    assert str(status_error(404, "NoSuchKey", "GET s3://b/k")) == "GET s3://b/k: not found"
    assert "access denied (AccessDenied)" in str(status_error(403, "AccessDenied", "HEAD x"))

"""A ranged HTTP answer checked against what was asked (every store's ranged GETs)."""

from __future__ import annotations

import re

from syncd.core.plan import Range
from syncd.errors import RetryableError

__all__ = ["check_content_range"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def check_content_range(
    uri: str, content_range: str | None, length: int, byte_range: Range
) -> None:
    """A ranged response must carry exactly the bytes asked for (RetryableError if not).

    Some servers answer a ranged GET with 200 and a correct Content-Range (rclone); without
    one, the length must match.
    """
    if content_range:
        match = _CONTENT_RANGE.match(content_range)
        if not match or (int(match.group(1)), int(match.group(2)) + 1) != (
            byte_range.start,
            byte_range.end,
        ):
            raise RetryableError(
                f"GET {uri}: asked for {byte_range.header}, got Content-Range {content_range}",
                "bad_response",
            )
    elif length != byte_range.length:
        raise RetryableError(
            f"GET {uri}: asked for {byte_range.header}, got {length} bytes", "bad_response"
        )

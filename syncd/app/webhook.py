"""MLflow webhook deliveries: checking their signature and saying what they announce (pure).

MLflow (>= 3.3) signs each delivery with HMAC-SHA256 over `"{delivery_id}.{timestamp}.{body}"`,
sent as `X-MLflow-Signature: v1,<base64>`. A delivery only wakes the reconciler early: polling
stays the source of truth (delivery is best effort), so a lost or refused delivery costs at
most one poll interval, and a replayed one at most one extra poll.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from syncd.errors import WebhookRejectedError, quoted

__all__ = [
    "DELIVERY_HEADER",
    "MAX_SKEW_SECONDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "check_delivery",
    "delivery_model",
    "describe_delivery",
    "sign",
]

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# A signed delivery older (or newer) than this is refused, so a captured request cannot be
# replayed later. MLflow retries a failed delivery for well under this (backoff capped at 60 s).
MAX_SKEW_SECONDS = 300.0


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends for this delivery."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def check_delivery(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    max_skew: float = MAX_SKEW_SECONDS,
) -> None:
    """Raise WebhookRejectedError unless the delivery is signed with `secret` and fresh."""
    signature = headers.get(SIGNATURE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    delivery_id = headers.get(DELIVERY_HEADER)
    if not signature or not timestamp or not delivery_id:
        missing = [
            name
            for name, value in (
                (SIGNATURE_HEADER, signature),
                (TIMESTAMP_HEADER, timestamp),
                (DELIVERY_HEADER, delivery_id),
            )
            if not value
        ]
        raise WebhookRejectedError(
            f"missing {', '.join(missing)} (is the webhook created with a secret?)"
        )
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise WebhookRejectedError(
            f"{TIMESTAMP_HEADER} {quoted(timestamp)} is not a number"
        ) from None
    if abs(now - sent_at) > max_skew:
        raise WebhookRejectedError(
            f"timestamp is {now - sent_at:+.0f}s off this clock (at most {max_skew:.0f}s allowed)"
        )
    expected = sign(secret, delivery_id, timestamp, body)
    # compare_digest: the time taken must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookRejectedError("signature does not match (wrong secret, or a changed body)")


def delivery_model(body: bytes) -> str | None:
    """The registered model a delivery is about, when it names one (then only it is read)."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def describe_delivery(body: bytes) -> str:
    """A short line for logs and the status page: `model_version_alias.created m@prod -> 3`."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return "a delivery with a body that is not JSON"
    if not isinstance(payload, dict):
        return "a delivery with an unexpected body"
    event = f"{payload.get('entity', '?')}.{payload.get('action', '?')}"
    data = payload.get("data")
    if not isinstance(data, dict):
        return event
    name = data.get("name", "?")
    if "alias" in data:
        return f"{event} {name}@{data['alias']} -> {data.get('version', '?')}"
    if "version" in data:
        return f"{event} {name} v{data['version']}"
    return f"{event} {name}"

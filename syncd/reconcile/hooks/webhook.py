"""`webhook`: POST a signed JSON document about the folder now in place."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import asdict

import aiohttp

from syncd.errors import HookError
from syncd.reconcile.hooks.event import HookEvent, Retry
from syncd.remote.failure import hide_url, host_of
from syncd.settings import WebhookHook

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Webhook", "signature"]

SIGNATURE_HEADER = "X-Syncd-Signature"
TIMESTAMP_HEADER = "X-Syncd-Timestamp"


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`, what X-Syncd-Signature carries."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    """One attempt of a POST: Retry for 429, 5xx and a failed connection, HookError for 4xx."""

    def __init__(self, settings: WebhookHook) -> None:
        self._settings = settings

    async def attempt(self, event: HookEvent) -> str:
        hook = self._settings
        body = json.dumps({"event": "folder_in_place", **asdict(event)}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(int(time.time()))}
        if hook.secret is not None:
            headers[SIGNATURE_HEADER] = signature(hook.secret.get_secret_value(), body)
        timeout = aiohttp.ClientTimeout(total=hook.timeout)
        # Slack and Teams URLs are bearer secrets (the token is the path): every word said
        # about this POST names the host only.
        where = f"POST {host_of(hook.url)}"
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(hook.url, data=body, headers=headers) as response,
            ):
                raise_for(response.status, where)
                return f"{where}: {response.status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            said = hide_url(f"{type(exc).__name__}: {exc}", hook.url)
            raise Retry(f"{where}: {said}") from exc


def raise_for(status: int, what: str) -> None:
    if status == 429 or status >= 500:
        raise Retry(f"{what}: HTTP {status}")
    if status >= 400:
        raise HookError(f"{what}: HTTP {status}")

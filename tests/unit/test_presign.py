"""UrlSigner's URLs (CRT's SigV4 signer after the first of a bucket) are botocore's, byte for
byte: same parameters, same signature, for every key shape and both addressing styles."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from syncd.remote.s3.presign import UrlSigner

KEYS = [
    "runs/0123/artifacts/model.safetensors",
    "runs/with space/and+plus/ünïcödé=1&2.bin",
    "a/b/c~d/e%20f/[x].json",
]


def _split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", dict(parse_qsl(parts.query))


async def _same_second(signer: UrlSigner, full: Any, key: str, checksums: bool) -> None:
    for _ in range(5):  # both must be signed within the same second to compare
        ours = _split(await signer.url("models", key, 900, checksums))
        theirs = _split(await full("models", key, 900, checksums))
        if ours[1]["X-Amz-Date"] == theirs[1]["X-Amz-Date"]:
            assert ours == theirs
            return
    raise AssertionError("never signed within one second")


@pytest.mark.parametrize("addressing", ["path", "virtual"])
@pytest.mark.parametrize("token", [None, "session/token+="])
async def test_fast_urls_are_botocores(
    monkeypatch: pytest.MonkeyPatch, addressing: str, token: str | None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    endpoint = "https://s3.eu-west-1.amazonaws.com" if addressing == "virtual" else None
    session = get_session()
    config = AioConfig(signature_version="s3v4", s3={"addressing_style": addressing})
    async with session.create_client(
        "s3", region_name="eu-west-1", endpoint_url=endpoint, config=config
    ) as client:
        signer = UrlSigner(client, session, "eu-west-1")
        await signer.url("models", "first/of/the/bucket", 900, checksums=False)  # learns the base
        full = signer._full  # botocore's generate_presigned_url, as the signer calls it

        async def refuse(*args: Any) -> str:  # pragma: no cover
            raise AssertionError(f"botocore's full path taken for {args}")

        monkeypatch.setattr(signer, "_full", refuse)  # from here on, every URL is CRT's
        for key in KEYS:
            for checksums in (False, True):
                await _same_second(signer, full, key, checksums)
        if token:
            url = await signer.url("models", KEYS[0], 900, checksums=False)
            assert dict(parse_qsl(urlsplit(url).query))["X-Amz-Security-Token"] == token

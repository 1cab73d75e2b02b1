"""Signature checks of MLflow webhook deliveries, against MLflow's own signer."""

from __future__ import annotations

import json

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from syncd.app.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_delivery,
    describe_delivery,
    sign,
)
from syncd.errors import WebhookRejectedError

BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-11-26T07:00:00+00:00",
        "data": {"name": "TinyLlama-MODEL", "alias": "production", "version": "7"},
    }
)
NOW = 1_800_000_000.0


def headers(secret: str = "s3cret", at: float = NOW, body: str = BODY) -> dict[str, str]:
    return {
        SIGNATURE_HEADER: sign(secret, "delivery-1", str(int(at)), body.encode()),
        TIMESTAMP_HEADER: str(int(at)),
        DELIVERY_HEADER: "delivery-1",
    }


def test_signature_is_the_one_mlflow_sends() -> None:
    ours = sign("s3cret", "delivery-1", "1800000000", BODY.encode())
    assert ours == _generate_hmac_signature("s3cret", "delivery-1", "1800000000", BODY)


def test_a_fresh_signed_delivery_passes() -> None:
    check_delivery("s3cret", headers(), BODY.encode(), NOW)
    check_delivery("s3cret", headers(at=NOW - 299), BODY.encode(), NOW)


@pytest.mark.parametrize(
    ("case", "given", "body", "reason"),
    [
        ("wrong secret", headers(secret="other"), BODY, "signature does not match"),
        ("changed body", headers(), BODY.replace('"7"', '"8"'), "signature does not match"),
        ("too old", headers(at=NOW - 301), BODY, "off this clock"),
        ("from the future", headers(at=NOW + 301), BODY, "off this clock"),
        ("unsigned", {TIMESTAMP_HEADER: "1", DELIVERY_HEADER: "d"}, BODY, SIGNATURE_HEADER),
        ("no headers", {}, BODY, "is the webhook created with a secret"),
        (
            "bad timestamp",
            {**headers(), TIMESTAMP_HEADER: "yesterday"},
            BODY,
            "is not a number",
        ),
    ],
)
def test_deliveries_refused(case: str, given: dict[str, str], body: str, reason: str) -> None:
    with pytest.raises(WebhookRejectedError, match=reason):
        check_delivery("s3cret", given, body.encode(), NOW)


def test_description_names_model_alias_and_version() -> None:
    assert describe_delivery(BODY.encode()) == (
        "model_version_alias.created TinyLlama-MODEL@production -> 7"
    )
    created = {
        "entity": "model_version",
        "action": "created",
        "data": {"name": "m", "version": "3"},
    }
    assert describe_delivery(json.dumps(created).encode()) == "model_version.created m v3"
    assert describe_delivery(b"not json") == "a delivery with a body that is not JSON"
    assert describe_delivery(b"[1]") == "a delivery with an unexpected body"

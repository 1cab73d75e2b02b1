"""Which store reads a URI, what each store's URI means, and each adapter's errors in syncd's
words (syncd.remote.stores, .gcs, .azure)."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from syncd.core.checksum import Algorithm
from syncd.core.plan import ObjectFacts, choose_check
from syncd.errors import ObjectChangedError, RetryableError, SourceError, SourceMissingError
from syncd.remote import azure, gcs
from syncd.remote.s3 import S3Location
from syncd.remote.source import locate


def test_each_scheme_goes_to_its_store() -> None:
    assert locate("s3://bucket/a/b/", None) == S3Location("bucket", "a/b")
    assert locate("gs://bucket/a/b", None) == gcs.GcsLocation("bucket", "a/b")
    blob = locate("wasbs://models@acct.blob.core.windows.net/runs/1/artifacts", None)
    assert isinstance(blob, azure.AzureLocation)
    assert (blob.account, blob.container, blob.prefix) == ("acct", "models", "runs/1/artifacts")
    assert blob.uri == "wasbs://models@acct.blob.core.windows.net/runs/1/artifacts"
    assert blob.child("x.bin").uri.endswith("/runs/1/artifacts/x.bin")


def test_an_adls_uri_is_read_through_the_blob_endpoint_and_keeps_its_spelling() -> None:
    lake = azure.parse("abfss://lake@acct.dfs.core.windows.net/mlflow/run")
    assert lake.blob_endpoint == "https://acct.blob.core.windows.net"
    assert lake.uri == "abfss://lake@acct.dfs.core.windows.net/mlflow/run"


def test_kserves_azure_blob_url_names_the_same_blob() -> None:
    url = azure.parse("https://acct.blob.core.windows.net/models/runs/1/artifacts/model")
    assert (url.account, url.container, url.prefix) == ("acct", "models", "runs/1/artifacts/model")
    assert url.blob_endpoint == "https://acct.blob.core.windows.net"
    assert (
        url.child("a.bin").uri
        == "https://acct.blob.core.windows.net/models/runs/1/artifacts/model/a.bin"
    )
    with pytest.raises(SourceError, match="is not an Azure Blob URI"):
        azure.parse("https://example.com/models/x")


def test_a_proxy_uri_maps_into_any_store_named_as_the_destination() -> None:
    mapped = locate("mlflow-artifacts:/3/abc/artifacts/model", "gs://bucket/mlartifacts")
    assert mapped == gcs.GcsLocation("bucket", "mlartifacts/3/abc/artifacts/model")


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("hdfs://nn/models", "uses hdfs; syncd reads s3://, gs://, wasbs://"),
        ("/mnt/models", "uses a local path"),
        ("gs:///path", "no bucket in gs:///path"),
        ("wasbs://acct.blob.core.windows.net/c", "is not an Azure Blob URI"),
    ],
)
def test_a_uri_no_store_reads_is_refused_in_one_line(uri: str, said: str) -> None:
    with pytest.raises(SourceError, match=re.escape(said)) as caught:
        locate(uri, None)
    assert "\n" not in str(caught.value)


def test_a_gcs_download_states_its_crc32c_and_md5_as_s3_would() -> None:
    data = b"hello"
    md5 = hashlib.md5(data, usedforsecurity=False)
    headers = {
        "content-length": "5",
        "x-goog-hash": f"crc32c=mnG7TA==,md5={base64.b64encode(md5.digest()).decode()}",
    }
    facts = gcs.download_facts(headers, "1733650000123456")
    # No x-goog-generation (the emulator sends none): the generation pinned is the one read.
    assert facts.etag == "1733650000123456"
    assert facts.checksums == {Algorithm.CRC32C: "mnG7TA==", Algorithm.MD5: md5.hexdigest()}
    check = choose_check(facts, "checksum")
    assert (check.method, check.label) == ("full-crc", "crc32c")  # per range: repairable


def test_an_azure_blob_is_checked_by_its_content_md5_or_says_why_not() -> None:
    md5 = hashlib.md5(b"x", usedforsecurity=False).digest()
    with_md5 = azure.download_facts(
        {
            "content-length": "1",
            "etag": '"0x8DC1A2B3C4D5E6F"',
            "content-md5": base64.b64encode(md5).decode(),
        }
    )
    assert with_md5.etag == "0x8DC1A2B3C4D5E6F"  # case kept: If-Match compares it exactly
    assert choose_check(with_md5, "checksum").label == "md5"
    without = ObjectFacts(**{**with_md5.__dict__, "checksums": {}, "unchecked_because": "x"})
    assert choose_check(without, "checksum").note == "x"
    bare = azure.download_facts({"etag": '"0x1"'})
    assert "Content-MD5" in choose_check(bare, "checksum").note


@pytest.fixture
def eight_hours_behind_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time in Los Angeles: a naive UTC datetime read as local is 8 h off."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("eight_hours_behind_utc")
def test_a_gcs_token_is_refreshed_before_it_expires_whatever_the_local_zone() -> None:
    @dataclass
    class Credentials:
        token: str | None
        expiry: datetime | None  # google-auth's: naive, in UTC

    now = datetime.now(UTC).replace(tzinfo=None)
    assert gcs._expiring(Credentials(None, None))
    assert gcs._expiring(Credentials("t", now + timedelta(minutes=1)))
    assert not gcs._expiring(Credentials("t", now + timedelta(hours=1)))
    assert not gcs._expiring(Credentials("t", None))  # a token that never expires


class _Answer(HttpResponseError):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.error_code = code


def test_azure_errors_arrive_in_syncd_words() -> None:
    what = "GET wasbs://c@a.blob.core.windows.net/x"
    changed = azure.translate(_Answer(412, "ConditionNotMet"), what, "0x1")
    assert isinstance(changed, ObjectChangedError)
    assert isinstance(azure.translate(_Answer(404, "BlobNotFound"), what), SourceMissingError)
    busy = azure.translate(_Answer(503, "ServerBusy"), what)
    assert isinstance(busy, RetryableError)
    assert busy.reason == "throttled"
    assert isinstance(azure.translate(ServiceRequestError("refused"), what), RetryableError)

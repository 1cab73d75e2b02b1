"""The syncer on tmp_path over an in-memory store: sync, heal, repair recorded damage, refuse
an empty listing as terminal; the real Syncer, Downloader and LocalStore, no server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncd.core.desired import DesiredModel, ModelVersionRef
from syncd.errors import SourceMissingError, is_terminal
from syncd.local.store import LocalStore
from syncd.metrics import Metrics
from syncd.reconcile.syncer import Syncer
from syncd.remote.retry import RetryPolicy
from syncd.remote.source import Sources
from syncd.remote.store import OneStore
from syncd.settings import S3Settings
from syncd.transfer.engine import Downloader
from tests.support.fake_store import FakeObjectStore

MiB = 1 << 20
RUN = "c" * 32


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
def fake() -> FakeObjectStore:
    store = FakeObjectStore()
    store.put("b", f"{RUN}/model/config.json", b'{"model": "tiny"}')
    store.put("b", f"{RUN}/model/weights.bin", os.urandom(11 * MiB), part_size=5 * MiB)
    return store


@pytest.fixture
async def syncer(fake: FakeObjectStore) -> AsyncIterator[Syncer]:
    settings = S3Settings(part_size=4 * MiB, chunk_size=256 * 1024, threaded_reads=False)
    metrics = Metrics()
    downloader = Downloader(settings, OneStore(fake), metrics, sleep=no_sleep)
    sources = Sources(None, RetryPolicy(3, metrics, no_sleep), {"*": fake})
    yield Syncer(sources, downloader, metrics)
    downloader.close()


def wanted(run_id: str = RUN) -> DesiredModel:
    ref = ModelVersionRef("tiny", "1", "alias production")
    return DesiredModel(ref, run_id, "model_context", f"s3://b/{run_id}/model")


async def test_sync_heal_and_repair_without_a_server(
    syncer: Syncer, fake: FakeObjectStore, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "root")
    store.prepare()
    first = await syncer.ensure(store, "prod", wanted())
    folder = store.run_dir(RUN)
    assert (first.result, first.downloaded_files) == ("synced", 2)
    weights = fake.objects[f"b/{RUN}/model/weights.bin"].data
    assert (folder / "weights.bin").read_bytes() == weights
    again = await syncer.ensure(store, "prod", wanted())
    assert again.result == "noop"

    (folder / "config.json").unlink()
    fake.gets.clear()
    healed = await syncer.ensure(store, "prod", wanted())
    assert healed.healed == {"config.json": "missing_file"}
    assert [key for key, _ in fake.gets] == [f"{RUN}/model/config.json"]

    # bit rot recorded by a verify: only the damaged range comes back
    with (folder / "weights.bin").open("r+b") as handle:
        handle.seek(6 * MiB)
        handle.write(b"\x00")
    (span,) = [s for s in first.manifest.files[1].spans() if s.start <= 6 * MiB < s.end]
    store.damage.record(RUN, {"weights.bin": (span,)})
    fake.gets.clear()
    repaired = await syncer.ensure(store, "prod", wanted())
    assert repaired.result == "synced"
    assert fake.gets == [(f"{RUN}/model/weights.bin", f"bytes={span.start}-{span.end - 1}")]
    assert (folder / "weights.bin").read_bytes() == weights
    assert not store.damage.has(RUN)


async def test_an_empty_listing_is_terminal(syncer: Syncer, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.prepare()
    with pytest.raises(SourceMissingError) as failed:
        await syncer.ensure(store, "prod", wanted("d" * 32))
    assert is_terminal(failed.value)
    assert not (tmp_path / "root" / ("d" * 32)).exists()

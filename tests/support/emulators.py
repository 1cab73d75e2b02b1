"""The clouds' own emulators as child processes: Azurite (Microsoft's Azure Storage emulator,
npm `azurite`, installed by `.ci/run` into tests/emulators) and gcp-storage-emulator (PyPI),
which answers GCS's JSON API."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from syncd.app.embedded import EmbeddedServer
from syncd.errors import SyncdError

__all__ = ["AZURITE_KEY", "Azurite", "GcsEmulator", "azurite_binary"]

# Azurite's well-known development account (learn.microsoft.com, "Use the Azurite emulator").
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_EMULATORS = Path(__file__).resolve().parents[1] / "emulators"


def azurite_binary() -> str:
    """Azurite's blob service, as `npm ci --prefix tests/emulators` installs it."""
    local = _EMULATORS / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        raise SyncdError(
            "Azurite is not installed: npm ci --prefix tests/emulators (.ci/run does this)"
        )
    return found


class _AnyAnswer(EmbeddedServer):
    """Ready once the port answers HTTP at all: an emulator's root needs no 200."""

    any_answer = True


class Azurite(_AnyAnswer):
    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir, "azurite")
        self._data = log_dir / "azurite-data"

    @property
    def blob_endpoint(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.blob_endpoint};"
        )

    def command(self) -> list[str]:
        return [
            azurite_binary(),
            "--silent",
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]


class GcsEmulator(_AnyAnswer):
    def __init__(self, log_dir: Path, bucket: str) -> None:
        super().__init__(log_dir, "gcs-emulator")
        self._bucket = bucket

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
            "--default-bucket",
            self._bucket,
        ]

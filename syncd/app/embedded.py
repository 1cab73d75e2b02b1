"""Loopback MLflow and S3 servers as child processes, for `syncd demo` and the test suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from syncd.errors import SyncdError

__all__ = ["EmbeddedServer", "MlflowServer", "MotoServer", "free_port"]


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


class EmbeddedServer:
    """A server process on 127.0.0.1 that is ready once `health_path` answers 200."""

    health_path = "/"
    any_answer = False  # ready at any HTTP answer (an emulator whose root answers 400)

    def __init__(self, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._name = name
        self._log_path = log_dir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 120.0) -> None:
        """Start the process and wait until it answers; raise with its log tail if it dies."""
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("wb") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            # Interrupted (SIGTERM, Ctrl-C) or failed while starting: __exit__ will not run,
            # so the process must not outlive this call.
            self.stop()
            raise

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise SyncdError(f"{self._name} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError:
                if self.any_answer:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise SyncdError(f"{self._name} did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and everything it started (its process group: uvicorn, workers)."""
        process, self._process = self._process, None
        if process is None:
            return
        # The server runs in a session of its own, so its group id is its pid; signalling the
        # group also reaches the children it spawned, which would otherwise be orphaned.
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # a child that outlived its parent

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MotoServer(EmbeddedServer):
    """moto in server mode: a real HTTP S3 endpoint that computes ETags and checksums like S3."""

    health_path = "/moto-api/"

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir, "moto")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


class MlflowServer(EmbeddedServer):
    """`mlflow server` with a sqlite backend.

    With `artifacts_destination` it proxies artifacts (`mlflow-artifacts:/` URIs, as Domino's
    look); otherwise runs record `default_artifact_root` (an `s3://` URI) and clients go to S3.
    """

    health_path = "/health"

    def __init__(
        self,
        log_dir: Path,
        s3_endpoint: str,
        *,
        default_artifact_root: str | None = None,
        artifacts_destination: str | None = None,
        name: str = "mlflow",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(log_dir, name)
        self._extra_env = extra_env or {}
        self._db = log_dir / f"{name}.sqlite"
        self._s3_endpoint = s3_endpoint
        self._default_artifact_root = default_artifact_root
        self._artifacts_destination = artifacts_destination

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self._db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self._artifacts_destination:
            command += ["--serve-artifacts", "--artifacts-destination", self._artifacts_destination]
        else:
            root = self._default_artifact_root or "s3://mlflow/artifacts"
            command += ["--no-serve-artifacts", "--default-artifact-root", root]
        return command

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            # No job runner: it spawns a consumer per queue (7 processes) that syncd never uses.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_S3_ENDPOINT_URL=self._s3_endpoint,
            AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "testing"),
            AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        )
        env.update(self._extra_env)
        return env

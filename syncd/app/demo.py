"""`syncd demo`: an embedded MLflow and S3, a sample model in the seed's pattern, the daemon."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from syncd.app.service import check_port_free
from syncd.errors import SyncdError

if TYPE_CHECKING:
    from syncd.settings import Settings

__all__ = ["run_demo", "write_sample_model"]

MODEL = "TinyLlama-MODEL"
BUCKET = "mlflow"
_DEMO_NEEDS = ("moto", "flask", "sqlalchemy")  # the servers: what mlflow-skinny leaves out


def write_sample_model(folder: Path, shard_mib: tuple[int, ...] = (24, 6)) -> Path:
    """A Hugging Face-shaped folder: config, tokenizer, safetensors shards of random bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"vocab": {}}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    count = len(shard_mib)
    for index, size in enumerate(shard_mib, start=1):
        shard = folder / f"model-{index:05d}-of-{count:05d}.safetensors"
        with shard.open("wb") as handle:
            for _ in range(size):
                handle.write(os.urandom(1 << 20))
    return folder


def _check_demo_extra() -> None:
    missing = [name for name in _DEMO_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise SyncdError(
            "syncd demo runs an MLflow server and an S3 server, which the plain install leaves "
            "out: pip install \".[demo]\" from a checkout (or 'syncd[demo]'); "
            f"missing: {', '.join(missing)}"
        )


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Publishing the sample without MLflow's chatter (run links, a progress bar, warnings
    about pickling and pip inference that say nothing about the demo)."""
    import contextlib
    import io
    import logging
    import sys
    import warnings

    quiet = {
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    saved_env = {name: os.environ.get(name) for name in quiet}
    os.environ.update(quiet)
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    chatter = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            contextlib.redirect_stderr(chatter),
        ):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(chatter.getvalue())  # what MLflow said matters when it failed
        raise
    finally:
        logger.setLevel(level)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _scratch(workdir: Path | None, keep: bool) -> Iterator[Path]:
    """The given folder (left as it is), or a temporary one removed on exit unless `keep`."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    scratch = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        yield scratch
    finally:
        if keep:
            print(f"syncd demo: kept {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"syncd demo: removed {scratch} (--keep keeps it for a look)", flush=True)


def run_demo(workdir: Path | None, port: int, once: bool, *, keep: bool = False) -> int:
    """Start everything on loopback, publish, point `production` at it, run the daemon.

    Fails before starting anything when the demo extra is missing or the port is taken;
    SIGTERM and Ctrl-C at any moment stop every child process and remove the scratch folder.
    """
    _check_demo_extra()
    check_port_free("127.0.0.1", port, "--port")
    # Until the daemon's own handlers take over, SIGTERM unwinds like Ctrl-C, so the
    # context managers below stop the servers instead of leaving them orphaned.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _scratch(workdir, keep) as scratch:
            return _run(scratch, port, once)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _demo_settings(root: Path, port: int) -> Settings:
    from syncd.settings import load_settings

    target = {"name": "prod", "root": str(root), "alias": "production", "models": [MODEL]}
    return load_settings(
        overrides={
            "poll_interval": "5s",
            "targets": [target],
            "http": {"host": "127.0.0.1", "port": port},
        }
    )


def _run(workdir: Path, port: int, once: bool) -> int:
    import boto3

    from syncd.app.embedded import MlflowServer, MotoServer
    from syncd.app.service import run_service
    from syncd.publish import publish_model

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(f"syncd demo: working in {workdir}", flush=True)
    with MotoServer(workdir / "logs") as s3_server:
        boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=BUCKET)
        with MlflowServer(
            workdir / "logs", s3_server.url, default_artifact_root=f"s3://{BUCKET}/artifacts"
        ) as mlflow_server:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_server.url
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
            print(f"  MLflow: {mlflow_server.url}   S3 (moto): {s3_server.url}", flush=True)
            sample = write_sample_model(workdir / "sample-model")
            with _quiet_mlflow():
                published = publish_model(mlflow_server.url, MODEL, sample, alias="production")
            print(
                f"  published {MODEL} v{published.version}: binaries on parent run "
                f"{published.parent_run_id}, pyfunc on nested run {published.child_run_id}, "
                "alias production -> it",
                flush=True,
            )
            root = workdir / "llm-models"
            settings = _demo_settings(root, port)
            print(
                f"  daemon: status page http://127.0.0.1:{port}/  metrics /metrics  "
                f"JSON /api/status\n  watch {root}/{published.parent_run_id} appear "
                "(Ctrl-C stops everything)",
                flush=True,
            )
            folder = root / published.parent_run_id
            shown: list[str] = []

            def in_place(daemon: object) -> None:
                if folder.is_dir():
                    shown[:] = sorted(p.name for p in folder.iterdir())
                    print(f"  in place: {folder}: {', '.join(shown)}", flush=True)

            asyncio.run(run_service(settings, exit_when_ready=once, on_ready=in_place))
            if shown:
                return 0
            print(f"  {folder} is not there: see the log above", flush=True)
            return 1

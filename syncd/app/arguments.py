"""The `syncd` command line: its subcommands, their flags, and argument types that turn a
mistake into one line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from syncd import __version__
from syncd.units import parse_size

__all__ = ["EXIT_CONFIG", "parser"]

EXIT_CONFIG = 2


def _port(text: str) -> int:
    """A TCP port number for argparse: 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def _version_number(text: str) -> str:
    """A registered model version: a positive whole number, as MLflow numbers them."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"not a model version: {text!r} (versions are numbers: 1, 2, ...)"
        )
    return str(int(text))


def _rate(text: str) -> int:
    """A read rate for argparse: bytes per second, e.g. 200MiB."""
    try:
        rate = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be above 0")
    return rate


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("seconds cannot be negative")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The `syncd` command line: every subcommand and its flags."""
    parser = _OneLineParser(
        prog="syncd",
        description="Keep LLM binaries from the MLflow Experiment Manager in dataset folders.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = _command(commands, "run", "run the daemon", _RUN)
    run.add_argument("--config", type=Path, help="YAML config file")
    _sync_arguments(_command(commands, "sync", "sync one model version now, then exit", _SYNC))
    _verify_arguments(
        _command(commands, "verify", "re-hash run folders against their manifests", _VERIFY)
    )
    status = _command(commands, "status", "list the run folders syncd keeps under a root", _STATUS)
    status.add_argument("--root", type=Path, required=True, help="dataset folder")
    status.add_argument("--json", action="store_true", help="print JSON")
    _publish_and_fetch_arguments(commands)
    _demo_arguments(
        _command(commands, "demo", "embedded MLflow + S3 + a sample model + the daemon", _DEMO)
    )
    return parser


# What `syncd COMMAND --help` says above its flags: what the command does and what it leaves.
_RUN = (
    "Poll the MLflow registry (and take its webhooks) and keep each target's dataset folder "
    "holding the binaries its alias or stage points at: downloaded, verified, swapped in "
    "whole, healed when damaged; serves /healthz, /readyz, /metrics and a status page."
)
_SYNC = (
    "Resolve one model version (by alias or number) to the run that holds its binaries and "
    "put them in ROOT/RUN_ID, verified and swapped in whole; prints the folder. Exit 0 when "
    "it is in place, 1 when it cannot be, 2 for a usage or config mistake."
)
_VERIFY = (
    "Re-hash the files of run folders against the manifests syncd wrote; exit 1 if any is "
    "damaged. With --repair, fetch only the damaged ranges again (or hand the damage to the "
    "daemon writing the root) and exit 0 once everything verifies."
)
_STATUS = "List the run folders under ROOT: files, bytes, damage, and who wants each."
_DEMO = (
    "Start an embedded MLflow server and S3, publish a small sample model, and run the daemon "
    "against them with its status page (needs the [demo] extra)."
)
_PUBLISH = (
    "Log a model folder to a parent run and register a light pyfunc on a nested child run "
    "naming it (model_context.json): the pattern syncd resolves."
)


def _command(commands: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description
    )
    return parser


def _sync_arguments(sync: argparse.ArgumentParser) -> None:
    sync.add_argument("--model", required=True, help="registered model name")
    pointer = sync.add_mutually_exclusive_group(required=True)
    pointer.add_argument("--alias", help="registry alias, e.g. production")
    pointer.add_argument(
        "--version", dest="model_version", type=_version_number, help="model version number"
    )
    sync.add_argument(
        "--root", type=Path, required=True, help="dataset folder, e.g. .../llm-models"
    )
    sync.add_argument("--config", type=Path, help="YAML config file (s3, mlflow, resolution)")
    sync.add_argument(
        "--artifact-path", default="model", help="subpath of the parent run's artifacts"
    )
    sync.add_argument("--no-progress", action="store_true", help="no progress bar")
    sync.add_argument(
        "--after-sync",
        action="store_true",
        help="then run the after_sync hooks of the --config target whose root is --root",
    )
    sync.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait while another syncd writes the root (default 60; 0: do not wait)",
    )


def _verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument(
        "--root", type=Path, required=True, help="dataset folder, e.g. .../llm-models"
    )
    verify.add_argument(
        "--repair",
        action="store_true",
        help="repair what is damaged (range by range), or have the daemon writing the root "
        "repair it, and exit 0 only once everything verifies",
    )
    verify.add_argument(
        "--wait",
        type=_seconds,
        default=600.0,
        help="with --repair on a root a daemon writes: seconds to wait for it (default 600)",
    )
    verify.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="default: every managed run")
    verify.add_argument(
        "--remote", action="store_true", help="also compare manifests with the source listing"
    )
    verify.add_argument(
        "--rate", type=_rate, default=None, help="read at most this per second, e.g. 200MiB"
    )
    verify.add_argument("--config", type=Path, help="YAML config file (s3, mlflow)")


def _publish_and_fetch_arguments(commands: Any) -> None:
    publish = _command(
        commands, "publish", "publish a model folder in the nested-run pattern", _PUBLISH
    )
    publish.add_argument("--model", required=True, help="registered model name")
    publish.add_argument("--folder", type=Path, required=True, help="a save_pretrained folder")
    publish.add_argument("--alias", help="point this alias at the new version")
    publish.add_argument(
        "--artifact-path", default="model", help="where in the parent run's artifacts"
    )
    publish.add_argument("--experiment", help="MLflow experiment name")
    publish.add_argument("--config", type=Path, help="YAML config file (mlflow.tracking_uri)")

    fetch = commands.add_parser(
        "fetch",
        help="KServe's storage initializer: models:/ URIs into folders, verified",
        description="Download each models:/NAME@ALIAS, models:/NAME/VERSION or "
        "models:/NAME/STAGE into its DEST_PATH: the files syncd sync would publish, verified, "
        "straight into the folder (bookkeeping in DEST/.syncd/, so a re-run resumes).",
    )
    fetch.add_argument("pairs", nargs="*", metavar="SOURCE_URI DEST_PATH", help="one or more pairs")
    fetch.add_argument(
        "--artifact-path", default="model", help="subpath of the parent run's artifacts"
    )
    fetch.add_argument("--config", type=Path, help="YAML config file (s3, mlflow, resolution)")


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--port",
        type=_port,
        default=None,
        help="the status page's port (default 8888, or SYNCD_HTTP__PORT)",
    )
    demo.add_argument("--workdir", type=Path, help="where to keep the demo's files (kept on exit)")
    demo.add_argument("--once", action="store_true", help="exit after the first complete pass")
    demo.add_argument(
        "--keep", action="store_true", help="keep the scratch folder on exit (for a look)"
    )

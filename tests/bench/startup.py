"""Start-up of `syncd sync`: from the process's start to its first object GET, registry excluded.

    python -m tests.bench.startup [--rounds 5] [--no-install]

The benchmark's world (`rclone serve s3`, a real `mlflow server` keeping its artifacts there), one
small model published in the seed's pattern, and `syncd sync --model M --alias production` from
a `pip install .` virtualenv, its MLflow and S3 endpoints each behind a TCP relay that stamps
every request and every response as they pass (the relay forwards the bytes untouched, so SigV4
signatures still hold). Per round it splits the time to the first GET of an object into: the
process up to its first registry request (interpreter, imports, settings), the registry's own
answers (request to response, summed: the target excludes them), the rest before the first S3
request (resolution, clients), and S3 until the first object GET (listing, HEAD). Medians.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.bench import tools, use_bench_credentials, world
from tests.bench.scenario import SYNCD, MiB, install_syncd, publish

_METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"PATCH ")


@dataclass
class Stamps:
    """(monotonic time, first line) of every request and response that crossed one relay."""

    requests: list[tuple[float, str]] = field(default_factory=list)
    responses: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.responses.clear()


class StampingRelay:
    """A TCP relay to `upstream` on a loopback port of its own: bytes pass as they are; a chunk
    that opens with an HTTP method or status line is stamped. (Good enough for a client that
    waits for each response before its next request on a connection, as syncd's do.)"""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.stamps = Stamps()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            server = socket.create_connection(self.upstream)
            for source, sink, kind in ((client, server, "request"), (server, client, "response")):
                threading.Thread(target=self._pump, args=(source, sink, kind), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, kind: str) -> None:
        try:
            while data := source.recv(1 << 20):
                now = time.monotonic()
                if kind == "request" and data.startswith(_METHODS):
                    with self.stamps.lock:
                        self.stamps.requests.append((now, data.split(b"\r\n", 1)[0].decode()))
                elif kind == "response" and data.startswith(b"HTTP/1."):
                    with self.stamps.lock:
                        self.stamps.responses.append((now, data.split(b"\r\n", 1)[0].decode()))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class Phases:
    to_registry: float  # process start to its first MLflow request
    registry: float  # the MLflow server's answers, summed
    to_s3: float  # last registry answer before S3 to the first S3 request, registry excluded
    to_get: float  # first S3 request to the first GET of a binary
    total: float  # process start to the first object GET

    @property
    def excluding_registry(self) -> float:
        return self.total - self.registry


def _answered(stamps: Stamps, before: float) -> float:
    """Seconds the relay's server spent answering requests made before `before`."""
    spent = 0.0
    responses = [t for t, _ in stamps.responses]
    for asked, _ in stamps.requests:
        if asked >= before:
            continue
        answer = next((t for t in responses if t >= asked), None)
        if answer is not None:
            spent += min(answer, before) - asked
    return spent


def one_round(
    relays: dict[str, StampingRelay], model: str, prefix: str, env: dict[str, str]
) -> Phases:
    for relay in relays.values():
        relay.stamps.clear()
    with tempfile.TemporaryDirectory() as root:
        command = [SYNCD, "sync", "--model", model, "--alias", "production", "--root", root]
        start = time.monotonic()
        subprocess.run([*command, "--no-progress"], env=env, check=True, capture_output=True)
    mlflow, s3 = relays["mlflow"].stamps, relays["s3"].stamps
    # The binaries' GETs (model_context.json, read while resolving, is on the child run)
    first_get = min(t for t, line in s3.requests if line.startswith(f"GET /{prefix}/"))
    first_s3 = min(t for t, _ in s3.requests)
    registry = _answered(mlflow, first_get)
    return Phases(
        to_registry=min(t for t, _ in mlflow.requests) - start,
        registry=registry,
        to_s3=first_s3 - start - _answered(mlflow, first_s3),
        to_get=first_get - first_s3,
        total=first_get - start,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-install", action="store_true", help="reuse the syncd venv")
    args = parser.parse_args()
    bins = tools()
    if not args.no_install:
        install_syncd()
    use_bench_credentials()
    with tempfile.TemporaryDirectory() as scratch, world(bins, Path(scratch)) as worlds:
        endpoint, tracking_uri, s3 = worlds
        published = publish(
            tracking_uri, s3, "startup", {"model.safetensors": 4 * MiB, "config.json": 4096}
        )
        relays = {
            name: StampingRelay(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            for name, url in (("mlflow", tracking_uri), ("s3", endpoint))
        }
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{relays['mlflow'].port}",
            "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{relays['s3'].port}",
        }
        one_round(
            relays, published.model, published.prefix, env
        )  # warms the page cache and the servers
        rounds = [
            one_round(relays, published.model, published.prefix, env) for _ in range(args.rounds)
        ]
    print("| phase | median s | min s | max s |")
    print("|---|---|---|---|")
    for label, values in (
        ("process start to first registry request", [r.to_registry for r in rounds]),
        ("registry answers (excluded below)", [r.registry for r in rounds]),
        ("start to first S3 request, registry excluded", [r.to_s3 for r in rounds]),
        ("first S3 request to first object GET", [r.to_get for r in rounds]),
        ("start to first object GET, registry excluded", [r.excluding_registry for r in rounds]),
        ("start to first object GET", [r.total for r in rounds]),
    ):
        print(
            f"| {label} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

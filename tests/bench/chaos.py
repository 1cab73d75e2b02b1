"""A chaos run against the real servers (not in CI): `python -m tests.bench.chaos --minutes 3`.

Real `rclone serve s3` and `mlflow server`, `syncd run` as a process (installed with
`pip install .` into its own virtualenv, as the benchmark does), and an endpoint-like reader
process that looks at every run folder every 0.2 s as an endpoint would. A seeded random
schedule, one fault every 1-4 s: alias moves and rollbacks, new versions published, the
daemon SIGKILLed or SIGTERMed and started again, S3 stopped for 10 s, the registry stopped
for 10 s, files deleted, bytes flipped (size and mtime kept), run folders deleted. Then the
faults stop and the run times how long the root takes to converge: every model's serving
folder exactly its source (sizes and ETags against the S3 listing) and the daemon's status
page saying so.

Invariants, checked by the reader on every look: a folder it can see that has a manifest
holds every file of that manifest, at its size (a partial folder is never visible); every
look at the bytes of a file the schedule did not touch matches the ETag its manifest
records; nothing appears outside the root. The report says what was injected, how often
the invariants were checked, what failed, and the convergence time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from syncd.app.embedded import MlflowServer, free_port
from tests.bench.bench import KEY, SECRET, s3_client, tools, use_bench_credentials
from tests.bench.daemon import Daemon, _ready, _wait
from tests.bench.scenario import BUCKET, SYNCD, Published, install_syncd, publish

MiB = 1 << 20
MODELS = ("chaos-a", "chaos-b", "chaos-c")
FAULTS = (
    "move",
    "move",
    "rollback",
    "publish",
    "sigkill",
    "sigterm",
    "s3_down",
    "registry_down",
    "delete_file",
    "flip_byte",
    "delete_folder",
)


class Rclone:
    """`rclone serve s3` on a fixed port, so it can be stopped and started again."""

    def __init__(self, binary: str, backing: Path, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._command = [
            binary,
            "serve",
            "s3",
            str(backing),
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{KEY},{SECRET}",
            "--force-path-style=true",
        ]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self._command, stdout=self._log.open("ab"), stderr=subprocess.STDOUT
        )
        for _ in range(200):
            try:
                s3_client(self.endpoint).list_buckets()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("rclone serve s3 did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()
            self._process = None


def reader(root: Path, outside: Path, until: Path, report: Path) -> None:
    """The endpoint-like reader: every 0.2 s, every run folder it can see (run in a process of
    its own: `python -m tests.bench.chaos --reader ...`)."""
    looks = files_checked = hashed = 0
    violations: list[str] = []
    rng = random.Random(0)
    while not until.exists():
        for manifest_path in sorted((root / ".syncd" / "manifests").glob("*.json")):
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                continue  # written atomically: a read that raced a rename sees the old one
            folder = root / manifest["run_id"]
            if not folder.is_dir():
                continue
            looks += 1
            touched = _touched(root, manifest["run_id"])
            for entry in manifest["files"]:
                path = folder / entry["path"]
                files_checked += 1
                if entry["path"] in touched:
                    continue
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    # The manifest is written after the rename: a folder swapped in an
                    # instant ago may be read against the manifest before it, once.
                    if _settled(manifest_path, folder):
                        violations.append(f"{manifest['run_id'][:8]}/{entry['path']} missing")
                    continue
                if size != entry["size"] and _settled(manifest_path, folder):
                    violations.append(f"{manifest['run_id'][:8]}/{entry['path']} partial")
                if rng.random() < 0.02 and entry.get("etag") and "-" not in entry["etag"]:
                    hashed += 1
                    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
                    if digest != entry["etag"] and _settled(manifest_path, folder):
                        violations.append(f"{manifest['run_id'][:8]}/{entry['path']} bytes")
        if any(outside.iterdir()):
            violations.append("something appeared outside the root")
        time.sleep(0.2)
    report.write_text(
        json.dumps(
            {
                "looks": looks,
                "files_checked": files_checked,
                "hashed": hashed,
                "violations": violations[:50],
                "violation_count": len(violations),
            }
        )
    )


def _touched(root: Path, run_id: str) -> set[str]:
    """Files the chaos driver damaged on purpose in the folder as it is now (it notes them,
    with the folder's inode, before it acts): a folder syncd has since swapped in anew is
    checked in full again."""
    notes = root.parent / "touched" / run_id
    try:
        inode = (root / run_id).stat().st_ino
        lines = notes.read_text().splitlines()
    except FileNotFoundError:
        return set()
    return {path for path, _, at in (line.rpartition("\t") for line in lines) if at == str(inode)}


def _settled(manifest_path: Path, folder: Path) -> bool:
    """Still so a moment later: a swap in progress is not what an endpoint keeps seeing."""
    before = (manifest_path.stat().st_mtime_ns, folder.stat().st_ino)
    time.sleep(0.05)
    try:
        return (manifest_path.stat().st_mtime_ns, folder.stat().st_ino) == before
    except FileNotFoundError:
        return False


class Chaos:
    def __init__(self, work: Path, seed: int, bins: dict[str, str]) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.root = work / "llm-models"
        self.outside = work / "outside"
        self.outside.mkdir()
        (work / "touched").mkdir()
        backing = work / "rclone"
        backing.mkdir()
        self.s3 = Rclone(bins["rclone"], backing, work / "rclone.log")
        self.s3.start()
        s3_client(self.s3.endpoint).create_bucket(Bucket=BUCKET)
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = self.s3.endpoint
        self.mlflow = MlflowServer(
            work, self.s3.endpoint, default_artifact_root=f"s3://{BUCKET}/artifacts"
        )
        self.mlflow.start()
        os.environ["MLFLOW_TRACKING_URI"] = self.mlflow.url
        self.env = {**os.environ}
        self.versions: dict[str, list[Published]] = {m: [] for m in MODELS}
        self.counts: dict[str, int] = {}
        self.restarts = 0
        for model in MODELS:
            for alias in (False, True):
                self._publish(model, alias=alias)
        self.daemon = self._start_daemon()

    def _publish(self, model: str, alias: bool) -> Published:
        files = {f"shard-{i}.bin": self.rng.randrange(1, 24) * MiB for i in range(3)}
        files["config.json"] = 700
        published = publish(self.mlflow.url, s3_client(self.s3.endpoint), model, files, alias=alias)
        self.versions[model].append(published)
        return published

    def _start_daemon(self) -> Daemon:
        config = {
            "poll_interval": "2s",
            "sweep_interval": "5s",
            "remote_check_interval": "30s",
            "deep_verify_interval": "20s",
            "gc_grace": "1h",
            "targets": [
                {
                    "name": "prod",
                    "root": str(self.root),
                    "alias": "production",
                    "models": list(MODELS),
                }
            ],
        }
        daemon = Daemon(self.work, config, self.env)
        return daemon

    def _alias(self, model: str, published: Published) -> None:
        from mlflow import MlflowClient

        MlflowClient(self.mlflow.url).set_registered_model_alias(
            model, "production", published.version
        )
        self.serving[model] = published

    @property
    def serving(self) -> dict[str, Published]:
        if not hasattr(self, "_serving"):
            self._serving = {m: self.versions[m][-1] for m in MODELS}
        return self._serving

    def _note_touched(self, paths: list[Path]) -> None:
        for path in paths:
            run = path.relative_to(self.root).parts[0]
            relative = path.relative_to(self.root / run).as_posix()
            inode = (self.root / run).stat().st_ino
            with (self.work / "touched" / run).open("a") as notes:
                notes.write(f"{relative}\t{inode}\n")

    def _published_files(self) -> list[Path]:
        manifests = self.root / ".syncd" / "manifests"
        runs = [p.stem for p in manifests.glob("*.json")] if manifests.is_dir() else []
        return sorted(
            p
            for run in runs
            if (self.root / run).is_dir()
            for p in (self.root / run).rglob("*")
            if p.is_file()
        )

    def inject(self, fault: str) -> None:
        self.counts[fault] = self.counts.get(fault, 0) + 1
        model = self.rng.choice(MODELS)
        if fault == "move":
            self._alias(model, self.rng.choice(self.versions[model]))
        elif fault == "rollback":
            self._alias(model, self.versions[model][0])
        elif fault == "publish":
            self._alias(model, self._publish(model, alias=False))
        elif fault in ("sigkill", "sigterm"):
            self.daemon.process.send_signal(
                signal.SIGKILL if fault == "sigkill" else signal.SIGTERM
            )
            self.daemon.process.wait(timeout=60)
            self.restarts += 1
            self.daemon = self._start_daemon()
        elif fault == "s3_down":
            self.s3.stop()
            time.sleep(10)
            self.s3.start()
        elif fault == "registry_down":
            self.mlflow.stop()
            time.sleep(10)
            self.mlflow.start()
        else:
            files = self._published_files()
            if not files:
                return
            path = self.rng.choice(files)
            folder = self.root / path.relative_to(self.root).parts[0]
            # rm -rf takes a folder apart file by file: all of it is the driver's doing
            self._note_touched(sorted(folder.rglob("*")) if fault == "delete_folder" else [path])
            if fault == "delete_file":
                path.unlink(missing_ok=True)
            elif fault == "flip_byte" and path.stat().st_size:
                before = path.stat()
                with path.open("r+b") as handle:
                    handle.seek(self.rng.randrange(before.st_size))
                    byte = handle.read(1)
                    handle.seek(-1, 1)
                    handle.write(bytes([byte[0] ^ 0x10]))
                os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
            elif fault == "delete_folder":
                subprocess.run(["rm", "-rf", str(folder)], check=False)

    def converged(self) -> bool:
        if not _ready(self.daemon.port):
            return False
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.daemon.port}/api/status", timeout=5
            ) as response:
                status = json.loads(response.read())
        except OSError:
            return False
        states = {f["run_id"]: f["state"] for t in status["targets"] for f in t["folders"]}
        s3 = s3_client(self.s3.endpoint)
        for published in self.serving.values():
            run = published.parent_run_id
            if states.get(run) != "synced":
                return False
            bucket, _, prefix = published.prefix.partition("/")
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
            for item in listed:
                name = item["Key"][len(prefix) + 1 :]
                path = self.root / run / name
                if not path.is_file() or path.stat().st_size != item["Size"]:
                    return False
                etag = item["ETag"].strip('"')
                if "-" not in etag:
                    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
                    if digest != etag:
                        return False
        return True

    def close(self) -> None:
        try:
            self.daemon.stop()
        except Exception:
            self.daemon.process.kill()
        self.mlflow.stop()
        self.s3.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--install", action="store_true", help="reinstall syncd's virtualenv")
    parser.add_argument("--reader", nargs=4, metavar=("ROOT", "OUTSIDE", "UNTIL", "REPORT"))
    args = parser.parse_args()
    if args.reader:
        reader(*(Path(p) for p in args.reader))
        return 0
    if args.install or not Path(SYNCD).exists():
        install_syncd()
    use_bench_credentials()
    bins = tools()
    with tempfile.TemporaryDirectory(prefix="syncd-chaos-") as scratch:
        work = Path(scratch)
        chaos = Chaos(work, args.seed, bins)
        until, report = work / "stop-reading", work / "reader.json"
        repo = Path(__file__).resolve().parents[2]
        looker = subprocess.Popen(
            [
                sys.executable,
                *("-m", "tests.bench.chaos", "--reader"),
                *(str(chaos.root), str(chaos.outside), str(until), str(report)),
            ],
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        try:
            chaos.daemon.wait_ready()
            deadline = time.monotonic() + args.minutes * 60
            while time.monotonic() < deadline:
                chaos.inject(chaos.rng.choice(FAULTS))
                time.sleep(chaos.rng.uniform(1, 4))
            converge = _wait(chaos.converged, limit=600, step=0.5)
            logs = "".join(p.read_text(errors="replace") for p in work.glob("syncd-*.log"))
        finally:
            until.touch()
            looker.wait(timeout=60)
            chaos.close()
        seen: dict[str, Any] = json.loads(report.read_text())
        internal = logs.count("internal error") + logs.count("Traceback")
        print(
            json.dumps(
                {
                    "seed": args.seed,
                    "minutes": args.minutes,
                    "faults": dict(sorted(chaos.counts.items())),
                    "faults_total": sum(chaos.counts.values()),
                    "daemon_restarts": chaos.restarts,
                    "reader": seen,
                    "convergence_seconds": round(converge, 1),
                    "internal_errors_in_logs": internal,
                },
                indent=2,
            )
        )
        return 0 if not seen["violation_count"] and not internal else 1


if __name__ == "__main__":
    sys.exit(main())

"""Every metric syncd exports, bound to one injected CollectorRegistry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd import __version__
from syncd.errors import RETRY_REASONS

__all__ = ["FOLDER_STATES", "HEAL_REASONS", "FolderCollector", "Metrics"]

FOLDER_STATES = ("pending", "syncing", "synced", "failed", "standby")
HEAL_REASONS = ("missing_folder", "missing_file", "size", "mtime", "checksum", "extra_file")

_POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_DURATION_BUCKETS = (0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


# A `_created` series beside every counter and histogram doubles what Prometheus stores and
# the dashboard never reads.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The `syncd_*` metrics; also the transfer engine's observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.syncs = Counter(
            "syncd_syncs",
            "Run folders ensured, by result: success (files written), noop, error.",
            ["target", "result"],
            registry=r,
        )
        self.sync_duration = Histogram(
            "syncd_sync_duration_seconds",
            "Time to sync a run folder that needed bytes (no-op checks are not observed).",
            ["target"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.downloaded_bytes = Counter(
            "syncd_downloaded_bytes", "Bytes written from object storage.", registry=r
        )
        self.downloaded_files = Counter(
            "syncd_downloaded_files", "Files downloaded and verified.", ["target"], registry=r
        )
        self.reused_files = Counter(
            "syncd_reused_files",
            "Files kept from a previous copy (hard link).",
            ["target"],
            registry=r,
        )
        self.shared_files = Counter(
            "syncd_reused_across_runs_files",
            "Files another run's folder held by strong identity: linked or copied, not downloaded.",
            ["target"],
            registry=r,
        )
        self.shared_bytes = Counter(
            "syncd_reused_across_runs_bytes",
            "Bytes not downloaded because another run's folder held the same file.",
            ["target"],
            registry=r,
        )
        self.request_retries = Counter(
            "syncd_request_retries",
            "Requests retried after a transient error.",
            ["reason"],
            registry=r,
        )
        self.checksum_failures = Counter(
            "syncd_checksum_failures", "Downloaded files whose checksum did not match.", registry=r
        )
        self.unverified_files = Counter(
            "syncd_unverified_files",
            "Files published with only their size checked (no checksum available).",
            ["target"],
            registry=r,
        )
        self.in_flight_requests = Gauge(
            "syncd_in_flight_requests", "Object storage requests in flight.", registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When a target last had every wanted folder in place.",
            ["target"],
            registry=r,
        )
        self.registry_polls = Counter(
            "syncd_registry_polls",
            "Registry reads per target, by result.",
            ["target", "result"],
            registry=r,
        )
        self.registry_poll_duration = Histogram(
            "syncd_registry_poll_duration_seconds",
            "Time to read what a target wants from the registry (one listing for all targets).",
            ["target"],
            buckets=_POLL_BUCKETS,
            registry=r,
        )
        self.registry_requests = Counter(
            "syncd_registry_requests",
            "Calls made to the MLflow registry (listings, lookups, resolutions).",
            registry=r,
        )
        self.alias_to_ready = Histogram(
            "syncd_alias_to_ready_seconds",
            "From the registry pointer moving to a version to its folder in place.",
            ["target"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.resolution_errors = Gauge(
            "syncd_resolution_errors",
            "Models of a target whose wanted version cannot be resolved.",
            ["target"],
            registry=r,
        )
        self.desired_info = Gauge(
            "syncd_desired_info",
            "The version each target wants, 1 per (target, model); the only metric with run ids. "
            "`alias` holds the alias, or the stage for stage targets.",
            ["target", "model", "alias", "version", "run_id"],
            registry=r,
        )
        self.desired_version = Gauge(
            "syncd_desired_version",
            "The registry version each target wants of each model.",
            ["target", "model"],
            registry=r,
        )
        self.synced_version = Gauge(
            "syncd_synced_version",
            "The registry version whose folder is in place and verified, per target and model.",
            ["target", "model"],
            registry=r,
        )
        self.heals = Counter(
            "syncd_heals",
            "Files rebuilt in a folder synced before, by what was wrong with them.",
            ["target", "reason"],
            registry=r,
        )
        self.heal_incidents = Counter(
            "syncd_heal_incidents",
            "Times a folder synced before was found damaged and rebuilt, however many files "
            "it took (what SyncdHealLoop counts: the same damage coming back).",
            ["target"],
            registry=r,
        )
        self.deep_verify_problems = Counter(
            "syncd_deep_verify_problems",
            "Files a deep verification found altered, missing or resized.",
            ["target"],
            registry=r,
        )
        self.removed_folders = Counter(
            "syncd_removed_folders",
            "Run folders removed because no target wants them (after gc_grace).",
            ["target"],
            registry=r,
        )
        self.quarantine_bytes = Gauge(
            "syncd_quarantine_bytes",
            "Bytes syncd set aside under {root}/.syncd/quarantine (kept for quarantine_keep).",
            ["target"],
            registry=r,
        )
        self.background_errors = Counter(
            "syncd_background_errors",
            "Local failures (EMFILE, EIO, ...) of a periodic task, logged and retried.",
            ["task"],
            registry=r,
        )
        self.foreign_folders = Gauge(
            "syncd_foreign_folders",
            "Folders under a target's root that syncd did not create (left alone).",
            ["target"],
            registry=r,
        )
        self.lock_held = Gauge(
            "syncd_lock_held",
            "1 while this process is the writer of the target's root, 0 while it waits.",
            ["target"],
            registry=r,
        )
        self.lock_waits = Counter(
            "syncd_lock_waits",
            "Times this process found the target's root locked by another writer.",
            ["target"],
            registry=r,
        )
        self.webhooks = Counter(
            "syncd_webhooks",
            "MLflow webhook deliveries, by result: accepted (a poll was woken) or rejected.",
            ["result"],
            registry=r,
        )
        self.hooks = Counter(
            "syncd_hooks",
            "After-sync hooks run, by kind (domino_restart, webhook, command) and result.",
            ["target", "kind", "result"],
            registry=r,
        )
        self.missing_models = Gauge(
            "syncd_missing_models",
            "Plain model names in a target's `models` that no registered model has (typos).",
            ["target"],
            registry=r,
        )
        self.endpoints_left_stopped = Gauge(
            "syncd_domino_endpoint_left_stopped",
            "1 while a Domino endpoint syncd stopped for a restart could not be started again.",
            ["target", "endpoint"],
            registry=r,
        )
        self.build = Info("syncd_build", "syncd version.", registry=r)
        for result in ("accepted", "rejected"):
            self.webhooks.labels(result=result)
        for reason in RETRY_REASONS:
            self.request_retries.labels(reason=reason)
        self.build.info({"version": __version__})

    def register_target(self, target: str) -> None:
        """Create every labeled series of a target at 0, so dashboards and `increase()` see
        the first event instead of a series that appears out of nothing."""
        for result in ("success", "noop", "error"):
            self.syncs.labels(target=target, result=result)
        for result in ("success", "error"):
            self.registry_polls.labels(target=target, result=result)
        for reason in HEAL_REASONS:
            self.heals.labels(target=target, reason=reason)
        for counter in (
            self.downloaded_files,
            self.reused_files,
            self.shared_files,
            self.shared_bytes,
            self.unverified_files,
            self.deep_verify_problems,
            self.heal_incidents,
            self.removed_folders,
            self.lock_waits,
        ):
            counter.labels(target=target)
        self.resolution_errors.labels(target=target)
        self.foreign_folders.labels(target=target)
        self.alias_to_ready.labels(target=target)

    # TransferObserver
    def bytes_downloaded(self, count: int) -> None:
        self.downloaded_bytes.inc(count)

    def request_retried(self, reason: str) -> None:
        self.request_retries.labels(reason=reason).inc()

    def checksum_failed(self, path: str) -> None:
        self.checksum_failures.inc()

    def in_flight(self, delta: int) -> None:
        self.in_flight_requests.inc(delta)


class FolderCollector(Collector):
    """Folder states and remaining bytes, read from the daemon when Prometheus scrapes."""

    def __init__(self, folders: Callable[[], Iterable[Any]]) -> None:
        self._folders = folders

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its samples depend on the targets configured

    def collect(self) -> list[Metric]:
        states = GaugeMetricFamily(
            "syncd_folders", "Wanted run folders by state.", labels=["target", "state"]
        )
        remaining = GaugeMetricFamily(
            "syncd_sync_remaining_bytes",
            "Bytes still to download for the syncs in progress.",
            labels=["target"],
        )
        counts: dict[tuple[str, str], int] = {}
        left: dict[str, int] = {}
        for folder in self._folders():
            left.setdefault(folder.target, 0)
            for state in FOLDER_STATES:
                counts.setdefault((folder.target, state), 0)
            counts[(folder.target, folder.state)] += 1
            if folder.state == "syncing" and folder.progress is not None:
                left[folder.target] += max(
                    folder.progress.total_bytes - folder.progress.done_bytes, 0
                )
        for (target, state), count in sorted(counts.items()):
            states.add_metric([target, state], count)
        for target, count in sorted(left.items()):
            remaining.add_metric([target], count)
        return [states, remaining]

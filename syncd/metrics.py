"""Every metric syncd exports, bound to one injected CollectorRegistry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from syncd import __version__

__all__ = ["Metrics"]

_DURATION_BUCKETS = (0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class Metrics:
    """The `syncd_*` metrics; also the transfer engine's observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.syncs = Counter(
            "syncd_syncs", "Run folders ensured, by outcome.", ["target", "result"], registry=r
        )
        self.sync_duration = Histogram(
            "syncd_sync_duration_seconds",
            "Time to ensure a run folder (downloads included).",
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
            "Time to read what a target wants from the registry.",
            ["target"],
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
            "The version each target wants, 1 per (target, model); the only metric with run ids.",
            ["target", "model", "selector", "version", "run_id"],
            registry=r,
        )
        self.heals = Counter(
            "syncd_heals",
            "Files rebuilt in a folder synced before, by what was wrong with them.",
            ["target", "reason"],
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
        self.build = Info("syncd_build", "syncd version.", registry=r)
        self.build.info({"version": __version__})

    # TransferObserver
    def bytes_downloaded(self, count: int) -> None:
        self.downloaded_bytes.inc(count)

    def request_retried(self, reason: str) -> None:
        self.request_retries.labels(reason=reason).inc()

    def checksum_failed(self, path: str) -> None:
        self.checksum_failures.inc()

    def in_flight(self, delta: int) -> None:
        self.in_flight_requests.inc(delta)

"""One /metrics across the gateway's processes (`gateway.processes` other than 1).

The processes share one port (SO_REUSEPORT), so a scrape reaches one of them at random; each
answering with its own counters would make a series jump up and down between scrapes. Each
process writes its figures into its own files in a per-run directory, in prometheus_client's
multi-process format, and every scrape answers with the merge of all the files
(prometheus_client's `MultiProcessCollector`): counters and histograms summed over every
process that ever ran in this run (a worker that died keeps its counts, so totals never go
back), gauges summed over the live ones only (`livesum`: a dead worker's files are dropped).

What is written when:
- the per-call figures (`coalmine_gateway_requests`, `_errors`, `_latency_seconds`) on every
  call, straight into the process's memory-mapped file: a scrape through any process sees
  every call already answered. ~0.6 µs a call (a plain-integer update is 0.16 µs;
  prometheus_client's own multi-process metrics, with a lock per value, 2.5 µs a call), see
  `RoleMetrics.observe`;
- the rarer metrics of the process's default registry (rejections, failovers, guard trips,
  the prediction log's counters and buffer, the mirror's queue) and its CPU time, resident
  memory and open descriptors: every `PUBLISH_S` seconds and just before the process answers
  a scrape, so a figure of another process is at most `PUBLISH_S` old. Scrapes stay
  monotone: the answering process publishes before it reads, so nothing it showed can be
  missing from a later scrape through another process.

The directory: `gateway.metrics_dir` when set (its `*.db` files are deleted at start: a
previous run's counts would otherwise be added to this one's), else a fresh temporary
directory removed at exit, whose name carries the parent's PID so that one left by a
killed run is removed by the next start. (Not `$PROMETHEUS_MULTIPROC_DIR`: that variable
switches every prometheus_client metric of the process to its own files at import.)
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "CALL_FAMILIES",
    "PUBLISH_S",
    "SharedFiles",
    "disable",
    "enable",
    "make_run_dir",
    "mark_dead",
    "remove_run_dir",
    "shared",
]

PUBLISH_S = 0.5
# written on every call by gateway.metrics.RoleMetrics itself, never published from the registry
CALL_FAMILIES = frozenset(
    {"coalmine_gateway_requests", "coalmine_gateway_errors", "coalmine_gateway_latency_seconds"}
)
_PREFIX = "coalmine-metrics-"
# the process metrics worth summing over the workers (the others, e.g. start time, are not)
_PROCESS_COUNTERS = frozenset({"process_cpu_seconds"})
_PROCESS_GAUGES = frozenset({"process_resident_memory_bytes", "process_open_fds"})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_run_dir(given: str | None = None) -> tuple[Path, bool]:
    """The directory for this run's files, emptied; and whether it is ours to remove."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{_PREFIX}*"):  # left behind by a run that was killed
        match = re.match(rf"{_PREFIX}(\d+)-", old.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")), True


def mark_dead(pid: int, path: Path) -> None:
    """Drop the live gauges of a worker that exited (its counters stay in the totals)."""
    mark_process_dead(pid, str(path))


def remove_run_dir(path: Path, owned: bool) -> None:
    if owned:
        shutil.rmtree(path, ignore_errors=True)


class SharedFiles:
    """One process's files in the run directory, and the merged view of all of them.

    Not thread-safe: used from the process's event loop only (calls, publishing, scrapes).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        # file names parse as prometheus_client's: the type first, for gauges the mode and
        # the PID (which mark_process_dead removes)
        self.calls = MmapedDict(str(path / f"counter_calls-{self.pid}.db"))
        self.latency = MmapedDict(str(path / f"histogram_calls-{self.pid}.db"))
        self._counters = MmapedDict(str(path / f"counter_{self.pid}.db"))
        self._histograms = MmapedDict(str(path / f"histogram_{self.pid}.db"))
        self._gauges = MmapedDict(str(path / f"gauge_livesum_{self.pid}.db"))
        self._registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self._registry, path=str(path))

    def publish(self) -> None:
        """Write this process's default-registry metrics (and process metrics) to its files."""
        for family in REGISTRY.collect():
            name = family.name
            if name in CALL_FAMILIES:
                continue
            if name.startswith("coalmine_") or name in _PROCESS_COUNTERS:
                kind = family.type
            elif name in _PROCESS_GAUGES:
                kind = "gauge"
            else:
                continue
            doc = family.documentation
            cumulative: dict[tuple[tuple[str, str], ...], float] = {}
            for sample in family.samples:
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                key = mmap_key(name, sample.name, list(labels), list(labels.values()), doc)
                if kind == "counter" and sample.name.endswith("_total"):
                    self._counters.write_value(key, float(sample.value), 0.0)
                elif kind == "gauge":
                    self._gauges.write_value(key, float(sample.value), 0.0)
                elif kind == "histogram" and sample.name.endswith("_sum"):
                    self._histograms.write_value(key, float(sample.value), 0.0)
                elif kind == "histogram" and sample.name.endswith("_bucket"):
                    # the files hold each bucket's own count; the merge accumulates them
                    series = tuple(sorted(labels.items()))
                    below = cumulative.get(series, 0.0)
                    cumulative[series] = float(sample.value)
                    le = sample.labels["le"]
                    key = mmap_key(name, sample.name, [*labels, "le"], [*labels.values(), le], doc)
                    self._histograms.write_value(key, float(sample.value) - below, 0.0)

    def exposition(self) -> bytes:
        """The merged page: publish this process's figures first, drop dead ones' gauges."""
        self.publish()
        for name in glob.glob(str(self.path / "gauge_live*_*.db")):
            pid = name.rsplit("_", 1)[-1].removesuffix(".db")
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    mark_process_dead(int(pid), str(self.path))
        return generate_latest(self._registry)

    def close(self) -> None:
        """At this process's exit: final figures written, its live gauges dropped."""
        self.publish()
        for f in (self.calls, self.latency, self._counters, self._histograms, self._gauges):
            f.close()
        mark_process_dead(self.pid, str(self.path))


_shared: SharedFiles | None = None


def shared() -> SharedFiles | None:
    """This process's files, when the gateway runs several processes (else None)."""
    return _shared if _shared is not None and _shared.pid == os.getpid() else None


def enable(path: Path) -> SharedFiles:
    """In a gateway worker, before it serves: write this process's figures under `path`."""
    global _shared
    _shared = SharedFiles(path)
    return _shared


def disable() -> None:
    global _shared
    found = shared()
    _shared = None
    if found is not None:
        found.close()

"""CPU and memory of a version's serving processes, read from local PIDs with psutil (I/O).

A resource source answers `read()` with one `Reading`: the CPU seconds the version's
processes have used so far (a counter, like Prometheus's `process_cpu_seconds_total`) and
their resident memory now. The controller reads each version's source at every evaluation;
`analysis.resources.ResourceWindows` turns successive readings into per-window CPU per
request and peak memory. Sources: `ProcessSource` (here: PIDs of local processes, or a PID
file re-read at each reading so a restarted server is followed) and `PrometheusSource`
(sources/prometheus.py: the version's own `/metrics`). Which source a version has is
server-side configuration only (`models[].versions[].metrics_url` / `pid_file`), never a
spec or a request.

`ResourceSampler` is an older, standalone sampler (percent of a core since its previous
sample); the `cpu` criterion judges CPU per request from `Reading`s instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

__all__ = [
    "ProcessSource",
    "Reading",
    "ResourceSampler",
    "ResourceSource",
    "reader",
    "resource_sources",
]


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of a version's processes."""

    cpu_seconds: float  # CPU time used so far (user + system), summed over the processes
    memory_bytes: float  # resident set size now, summed over the processes


class ResourceSource(Protocol):
    def read(self) -> Reading | None:
        """The current reading, or None when the processes cannot be read (down, unreachable).

        Never raises; may block briefly (a scrape has its own short timeout)."""
        ...


def _tree(p: psutil.Process) -> list[psutil.Process]:
    try:
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return [p]


class ProcessSource:
    """Local processes: fixed `pids`, or the PID in `pid_file` (one integer), each with its
    children (a server's worker processes)."""

    def __init__(self, pids: Iterable[int] = (), *, pid_file: str | Path | None = None) -> None:
        self.pids = list(pids)
        self.pid_file = Path(pid_file) if pid_file is not None else None
        if not self.pids and self.pid_file is None:
            raise ValueError("ProcessSource: give pids or a pid_file")

    def _roots(self) -> list[int]:
        if self.pid_file is None:
            return self.pids
        try:
            return [int(self.pid_file.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def read(self) -> Reading | None:
        cpu = mem = 0.0
        alive = False
        for pid in self._roots():
            try:
                root = psutil.Process(pid)
            except psutil.Error:
                continue
            for p in _tree(root):
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        cpu += t.user + t.system
                        mem += p.memory_info().rss
                    alive = True
                except psutil.Error:
                    continue
        return Reading(cpu, mem) if alive else None


def resource_sources(models: Iterable[Any]) -> dict[tuple[str, str], ResourceSource]:
    """(model, version) -> its source, from the configuration's models (`ModelConfig`):
    `metrics_url` (the version's Prometheus endpoint) or `pid_file` (local processes)."""
    from coalmine.analysis.sources.prometheus import PrometheusSource

    out: dict[tuple[str, str], ResourceSource] = {}
    for m in models:
        for v in m.versions:
            if getattr(v, "metrics_url", None) is not None:
                out[(m.name, v.name)] = PrometheusSource(str(v.metrics_url))
            elif getattr(v, "pid_file", None) is not None:
                out[(m.name, v.name)] = ProcessSource(pid_file=v.pid_file)
    return out


def reader(
    sources: Mapping[tuple[str, str], ResourceSource], model: str
) -> Callable[[str], Reading | None]:
    """version -> a reading of that version of `model` now (None: no source, or unreadable)."""

    def read(version: str) -> Reading | None:
        source = sources.get((model, version))
        return source.read() if source is not None else None

    return read


class ResourceSampler:
    def __init__(self, pids: Mapping[str, list[int]]) -> None:
        self._procs: dict[str, list[psutil.Process]] = {}
        for version, ids in pids.items():
            procs = []
            for pid in ids:
                try:
                    p = psutil.Process(pid)
                    p.cpu_percent(None)  # prime: the first reading is always 0
                    procs.append(p)
                except psutil.Error:
                    continue
            self._procs[version] = procs

    def sample(self) -> dict[str, dict[str, float]]:
        """One reading per version with at least one live process; dead ones are skipped."""
        out: dict[str, dict[str, float]] = {}
        for version, procs in self._procs.items():
            cpu = mem = 0.0
            alive = False
            for root in procs:
                for p in _tree(root):
                    try:
                        cpu += p.cpu_percent(None)
                        mem += p.memory_info().rss / 2**20
                        alive = True
                    except psutil.Error:
                        continue
            if alive:
                out[version] = {"cpu": cpu, "memory_mb": mem}
        return out

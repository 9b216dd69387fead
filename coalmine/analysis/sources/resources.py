"""CPU and memory of the serving processes of each version, sampled with psutil (I/O).

Point it at the PIDs Coalmine started (serve-model) or was given; each `sample()` returns
version → {"cpu": percent of one core since the previous sample, "memory_mb": RSS}, summed
over each version's processes and their children. Feed the samples to
`Evaluator.add_resource_samples` (or `Analysis.add_resources`) for the `cpu` and `memory`
criteria. Successive samples are autocorrelated, so treat those criteria as guard rails
(max_ratio / max), not fine comparisons. Remote servers need a metrics source (PromQL) instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil

__all__ = ["ResourceSampler"]


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

    def _tree(self, p: psutil.Process) -> list[psutil.Process]:
        try:
            return [p, *p.children(recursive=True)]
        except psutil.Error:
            return [p]

    def sample(self) -> dict[str, dict[str, float]]:
        """One reading per version with at least one live process; dead ones are skipped."""
        out: dict[str, dict[str, float]] = {}
        for version, procs in self._procs.items():
            cpu = mem = 0.0
            alive = False
            for root in procs:
                for p in self._tree(root):
                    try:
                        cpu += p.cpu_percent(None)
                        mem += p.memory_info().rss / 2**20
                        alive = True
                    except psutil.Error:
                        continue
            if alive:
                out[version] = {"cpu": cpu, "memory_mb": mem}
        return out

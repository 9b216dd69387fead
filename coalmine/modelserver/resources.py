"""serve-model's resource side: its own `/metrics`, and faults that cost CPU or memory.

`/metrics` is prometheus-client's default registry in the text format, which includes the
standard process metrics every Prometheus client library exports (`process_cpu_seconds_total`,
`process_resident_memory_bytes`, ...): what Coalmine's Prometheus resource source reads from
any model server, so serve-model is measured the way a real one is.

`ResourceFaults` make a version measurably worse: `burn_cpu_ms` spins the CPU for that long
in every inference call (a slower featurizer, a bigger model); `leak_kb` keeps that many
kilobytes per call forever (a cache that never evicts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

__all__ = ["ResourceFaults", "add_metrics_route"]


@dataclass
class ResourceFaults:
    burn_cpu_ms: float = 0.0
    leak_kb: float = 0.0
    _leaked: list[bytearray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for name in ("burn_cpu_ms", "leak_kb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def apply(self) -> None:
        """Spend CPU and keep memory as configured; called once per inference call."""
        if self.burn_cpu_ms:
            # process CPU time, not wall time: the burn is the same on a busy host
            end = time.process_time() + self.burn_cpu_ms / 1000
            while time.process_time() < end:
                pass
        if self.leak_kb:
            # written to, so the pages are resident (RSS), not only reserved
            self._leaked.append(bytearray(b"\x01" * int(self.leak_kb * 1024)))


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_metrics_route(app: web.Application) -> None:
    """GET /metrics: the process's Prometheus metrics (add before any catch-all route)."""
    app.router.add_get("/metrics", _metrics)

"""A version's resources from its own Prometheus endpoint: the standard process metrics (I/O).

Every Prometheus client library exports `process_cpu_seconds_total` and
`process_resident_memory_bytes` for the process serving `/metrics`; so do serve-model,
KServe's and Triton's servers behind their metrics port. Several series of one name (one per
worker process, or per label set) are summed, like `ProcessSource` sums a process tree.
The URL is server-side configuration (`models[].versions[].metrics_url`), never taken from
a spec or a request; the scrape has a short timeout and a size cap, so a slow or huge answer
costs an evaluation a moment, never the controller.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from coalmine.analysis.sources.resources import Reading

__all__ = ["PrometheusSource", "parse_process_metrics"]

log = logging.getLogger(__name__)

CPU = "process_cpu_seconds_total"
MEMORY = "process_resident_memory_bytes"
MAX_BYTES = 4 << 20  # a metrics page is kilobytes; refuse to buffer more than this


def parse_process_metrics(text: str) -> Reading | None:
    """The process metrics in a Prometheus text exposition; None if either is missing."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (CPU, MEMORY):
                totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    if CPU not in totals or MEMORY not in totals:
        return None
    return Reading(cpu_seconds=totals[CPU], memory_bytes=totals[MEMORY])


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # the configured URL is the only host called: a redirect is an error, not a new target
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# no proxies from the environment either; urllib logs nothing per request (httpx would log
# every scrape at INFO)
_OPENER = urllib.request.build_opener(_NoRedirects, urllib.request.ProxyHandler({}))


class PrometheusSource:
    """Scrapes `url` (e.g. http://model-v2:8080/metrics) at each `read()`."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"metrics_url: must be an http(s) URL (got {parsed.scheme!r})")
        self.url, self.timeout_s = url, timeout_s
        # logged without any user:password the URL may hold
        self._shown = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or ''}{parsed.path}"

    def read(self) -> Reading | None:
        try:
            with _OPENER.open(self.url, timeout=self.timeout_s) as response:
                body = response.read(MAX_BYTES + 1)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts are OSErrors
            log.warning("resources: cannot read %s: %s", self._shown, type(exc).__name__)
            return None
        if len(body) > MAX_BYTES:
            log.warning("resources: %s: page over %d bytes", self._shown, MAX_BYTES)
            return None
        try:
            return parse_process_metrics(body.decode("utf-8", errors="replace"))
        except ValueError:
            log.warning("resources: %s: not a Prometheus text page", self._shown)
            return None

"""A real Prometheus (Debian's `prometheus`) scraping one URL every second with a bearer
token, as examples/flagger/prometheus-scrape.yaml does; and Flagger's Prometheus query.

`flagger_query` does what Flagger's Prometheus provider does with a MetricTemplate
(pkg/metrics/providers/prometheus.go `RunQuery`, commit 15bd6ad5, 2026-07): the query's
`{{ variables.* }}` filled in from the Canary's templateVariables, a GET of
/api/v1/query, a 4xx/5xx answer an error, the vector's value strings parsed as floats (the
last one kept), no value or NaN the error ErrNoValuesFound. A skip when Prometheus is not
installed (.ci/run installs it).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.prometheus_process import running_prometheus

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: coalmine-judge
    metrics_path: {path}
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
"""


class NoValues(LookupError):
    """Flagger's ErrNoValuesFound: the query found no series (a failed check)."""


@contextmanager
def prometheus_scraping(url: str, token: str) -> Iterator[str]:
    """Yield the URL of a Prometheus scraping `url` (http://host:port/path) with `token`."""

    def configure(root: Path) -> str:
        (root / "token").write_text(token)
        host, _, path = re.sub(r"^https?://", "", url).partition("/")
        return CONFIG.format(path="/" + path, token_file=root / "token", target=host)

    with running_prometheus("coalmine-judge-prometheus-", configure) as (base, _root):
        yield base


def flagger_query(prometheus: str, query: str, variables: dict[str, str]) -> float:
    """A MetricTemplate query run as Flagger's Prometheus provider runs it."""
    for name, value in variables.items():
        query = re.sub(r"\{\{\s*variables\." + re.escape(name) + r"\s*\}\}", value, query)
    assert "{{" not in query, f"a template variable is missing: {query}"
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    if r.status_code >= 400:
        raise RuntimeError(f"error response: Status {r.status_code}: {r.text}")
    value: float | None = None
    for series in r.json()["data"]["result"]:
        raw = series["value"][1]
        if isinstance(raw, str):
            value = float(raw)
    if value is None or math.isnan(value):
        raise NoValues(query)
    return value


def wait_for_a_good_scrape(prometheus: str, timeout: float = 30) -> None:
    """Until the judge's target is up: its last scrape answered within `scrape_timeout`.

    A scrape that fails (here: the judge's API busy past the 1 s timeout with the very
    judgement a webhook just asked for, on a loaded machine) marks every series of the target
    stale at once, so a query then finds no value although the judgement exists. Flagger's
    interval (1m in the example) is far longer than a scrape, so a check there reads a
    settled series; a test reading right after a webhook waits for the next good scrape.
    """
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{prometheus}/api/v1/query", params={"query": "up"}, timeout=10)
        ups = [float(s["value"][1]) for s in r.json()["data"]["result"]]
        if ups and all(up == 1.0 for up in ups):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the judge's scrape still failing after {timeout} s: {ups}")
        time.sleep(0.25)


def wait_for_value(prometheus: str, query: str, variables: dict[str, str], want: float,
                   timeout: float = 30) -> float:  # fmt: skip
    """The query's value once it is `want` (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = flagger_query(prometheus, query, variables)
            if value == want:
                return value
        except NoValues:
            value = math.nan
        if time.monotonic() > deadline:
            raise AssertionError(f"{query}: {value}, not {want}, after {timeout} s")
        time.sleep(0.25)

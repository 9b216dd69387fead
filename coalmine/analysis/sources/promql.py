"""A configured Prometheus server's query API, for PromQL criteria (I/O).

`PrometheusQuery.value(promql)` runs an instant query (`GET /api/v1/query`) and returns
the single number it gives: a one-element vector or a scalar. An empty vector is no data
(None); an error, a timeout, a non-number or several series raise `QueryError`, which the
judge counts as no data for that window, with the reason. The server's URL comes from the
operator's config (`metric_sources:`), never from a spec or a request; redirects and
environment proxies are not followed, answers are capped in size, and a query has a short
timeout, so a slow Prometheus costs an evaluation a moment, never the controller.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["MAX_BYTES", "PrometheusQuery", "QueryError"]

MAX_BYTES = 1 << 20  # one number's answer is a few hundred bytes


class QueryError(Exception):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # the configured server is the only host called: a redirect is an error, not a target
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects, urllib.request.ProxyHandler({}))


def _number(value: Any) -> float:
    # the API gives [timestamp, "value"]; Prometheus spells NaN and infinities as strings
    try:
        return float(value[1])
    except (TypeError, ValueError, IndexError) as exc:
        raise QueryError(f"not a number: {value!r}") from exc


def parse_answer(payload: Any) -> float | None:
    """The number in an instant query's JSON answer (None: an empty vector)."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise QueryError(f"Prometheus refused the query: {error or payload!r}"[:300])
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result)
    if kind != "vector" or not isinstance(result, list):
        raise QueryError(f"expected a vector or a scalar, got {kind!r}")
    if not result:
        return None
    if len(result) > 1:
        raise QueryError(
            f"the query gave {len(result)} series; aggregate it to one (sum, max, ...)"
        )
    return _number(result[0].get("value") if isinstance(result[0], dict) else None)


class PrometheusQuery:
    """Instant queries against the Prometheus at `url` (e.g. http://prometheus:9090)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"prometheus url: must be an http(s) URL (got {parsed.scheme!r})")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The query's one number now (or at unix time `at`); None for an empty vector."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        request = urllib.request.Request(
            f"{self.url}/api/v1/query",
            data=urllib.parse.urlencode(params).encode(),  # POST: long queries fit
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                body = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query, with its reason
            try:
                body = exc.read(MAX_BYTES)
            except OSError:
                raise QueryError(f"HTTP {exc.code}") from None
            finally:
                exc.close()
        except (OSError, ValueError) as exc:
            raise QueryError(f"cannot reach the Prometheus server: {type(exc).__name__}") from None
        if len(body) > MAX_BYTES:
            raise QueryError(f"answer over {MAX_BYTES} bytes")
        try:
            payload = json.loads(body)
        except ValueError:
            raise QueryError("the answer is not JSON") from None
        value = parse_answer(payload)
        return None if value is None or math.isnan(value) else value

"""Test helper: the HTTP requests KServe's inference logger sends, replayed byte for byte.

Shape read from kserve/kserve pkg/logger (handler.go, worker.go): per logged call, a
request event and (for a 200 answer only) a response event, each one HTTP POST in
CloudEvents binary mode, sent by the CloudEvents Go SDK from a worker pool (so in either
order): headers Ce-Specversion 1.0, Ce-Id (the call's Ce-Id header or a new UUID), Ce-Type
org.kubeflow.serving.inference.request|response, Ce-Source, Ce-Time (RFC 3339, nanoseconds),
Ce-Inferenceservicename, Ce-Namespace, Ce-Component, Ce-Endpoint (default|canary),
Ce-Metadata (JSON of the request headers the logger is told to forward), and the request's
Content-Type on both; the body is the request's or the answer's body as it was.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def _rfc3339(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}123Z"


def event_headers(
    kind: str,
    call_id: str,
    service: str,
    ts: float,
    *,
    namespace: str = "default",
    component: str = "predictor",
    endpoint: str = "default",
    metadata: dict[str, list[str]] | None = None,
) -> dict[str, str]:
    return {
        "Ce-Specversion": "1.0",
        "Ce-Id": call_id,
        "Ce-Type": REQUEST if kind == "request" else RESPONSE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": _rfc3339(ts),
        "Ce-Inferenceservicename": service,
        "Ce-Namespace": namespace,
        "Ce-Component": component,
        "Ce-Endpoint": endpoint,
        "Ce-Metadata": json.dumps(metadata or {}),
        "Content-Type": "application/json",
        "User-Agent": "Go-http-client/1.1",
    }


class KServeLogger:
    """Sends one InferenceService's logger events to `url` (the collector's)."""

    def __init__(self, http: httpx.Client, url: str, service: str, **attributes: object):
        self.http = http
        self.url = url
        self.service = service
        self.attributes = attributes

    def send(self, kind: str, call_id: str, ts: float, body: bytes, **extra: object) -> int:
        headers = event_headers(kind, call_id, self.service, ts, **{**self.attributes, **extra})  # type: ignore[arg-type]
        return self.http.post(self.url, content=body, headers=headers).status_code

"""KServe inference logger events, read from binary-mode CloudEvents over HTTP (pure).

KServe's logger (`pkg/logger` of kserve/kserve) wraps each call of a logged component in two
events, sent separately and in either order, in binary mode: the attributes are `ce-*`
headers and the body is the call's body as it was.

    ce-specversion        1.0
    ce-type               org.kubeflow.serving.inference.request | ...inference.response
    ce-id                 the call's id: the request's `Ce-Id` header, else a new UUID;
                          the request event and the response event share it
    ce-source             the logger's source URI
    ce-time               when the event was sent (RFC 3339)
    ce-inferenceservicename, ce-namespace, ce-component (predictor, transformer, ...)
    ce-endpoint           default | canary (KServe's canaryTrafficPercent split)
    ce-metadata           JSON of the request headers the logger's metadataHeaders name
    Content-Type          the request's content type (on both events)

A response event is only sent for a 200 answer. Structured mode (`application/cloudevents
+json`) is read too, for a broker that re-encodes events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["REQUEST", "RESPONSE", "EventError", "LoggedEvent", "read_event"]

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
_STRUCTURED = "application/cloudevents+json"
_MAX_ATTRIBUTE = 512  # characters: names, ids and URIs are far shorter
_MAX_METADATA = 8192


class EventError(ValueError):
    """An event the collector cannot use: `field` (the attribute) and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    kind: str  # "request" | "response"
    id: str
    service: str
    namespace: str
    component: str
    endpoint: str
    time: float | None  # epoch seconds of ce-time, None when absent or unreadable
    metadata: Mapping[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = ""

    @property
    def call(self) -> tuple[str, str, str, str, str]:
        """What pairs a response with its request: the same call of the same component."""
        return (self.namespace, self.service, self.component, self.endpoint, self.id)

    def header(self, name: str) -> str | None:
        """A request header the logger forwarded in ce-metadata (case-insensitive)."""
        want = name.lower()
        for key, values in self.metadata.items():
            if key.lower() == want and values:
                return values[0]
        return None


def _time(text: str | None) -> float | None:
    if not text:
        return None
    try:  # RFC 3339; Python before 3.11 wanted no "Z"
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _metadata(text: str | None) -> dict[str, list[str]]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise EventError("ce-metadata", "not JSON") from None
    if not isinstance(value, dict):
        raise EventError("ce-metadata", "not a JSON object of header -> values")
    out: dict[str, list[str]] = {}
    for key, values in value.items():
        if isinstance(values, str):
            values = [values]
        if isinstance(values, list):
            out[str(key)] = [str(v) for v in values if isinstance(v, str | int | float)]
    return out


def _attributes_of_structured(body: bytes) -> tuple[dict[str, str], bytes, str]:
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise EventError("body", "a structured CloudEvent that is not JSON") from None
    if not isinstance(envelope, dict):
        raise EventError("body", "a structured CloudEvent must be a JSON object")
    attributes = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in envelope.items()
        if k not in ("data", "data_base64")
    }
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(str(envelope["data_base64"]), validate=True)
        except ValueError:
            raise EventError("data_base64", "not base64") from None
    elif "data" in envelope:
        data = json.dumps(envelope["data"]).encode()
    else:
        data = b""
    return attributes, data, attributes.get("datacontenttype", "")


def read_event(headers: Mapping[str, str], body: bytes) -> LoggedEvent:
    """The logger event in an HTTP request's headers (binary mode) or body (structured).

    `headers` must look names up case-insensitively (aiohttp's and Starlette's do).
    Raises EventError naming the attribute for anything the collector cannot use.
    """
    content_type = headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() == _STRUCTURED:
        attributes, body, content_type = _attributes_of_structured(body)
        prefix = ""
    else:
        attributes = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
        prefix = "ce-"

    def attribute(name: str, required: bool = True, longest: int = _MAX_ATTRIBUTE) -> str:
        value = attributes.get(prefix + name, "")
        if required and not value:
            raise EventError(prefix + name, "missing")
        if len(value) > longest:
            raise EventError(prefix + name, f"longer than {longest} characters")
        return value

    version = attribute("specversion")
    if version != "1.0":
        raise EventError(prefix + "specversion", f"{version!r}: only 1.0 is read")
    kind = {REQUEST: "request", RESPONSE: "response"}.get(attribute("type"))
    if kind is None:
        raise EventError(prefix + "type", f"not {REQUEST} or {RESPONSE}")
    return LoggedEvent(
        kind=kind,
        id=attribute("id"),
        service=attribute("inferenceservicename"),
        namespace=attribute("namespace", required=False),
        component=attribute("component", required=False) or "predictor",
        endpoint=attribute("endpoint", required=False) or "default",
        time=_time(attribute("time", required=False)),
        metadata=_metadata(attribute("metadata", False, _MAX_METADATA) or None),
        body=body,
        content_type=content_type,
    )

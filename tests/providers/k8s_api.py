"""A loopback HTTP server answering the Kubernetes API calls the providers make.

No Kubernetes API server can run on this machine, so the providers' apply path is tested
against this one, which the real `kubernetes` client talks to over real HTTP. It answers as
the API documents server-side apply for custom resources (and as recorded in the exchanges
below): `GET` 200 with the object or 404 with a `Status`; `PATCH` with
`application/apply-patch+yaml` 201 when it creates, 200 when it updates; the schema's
defaults filled in; `metadata.managedFields` listing what the `coalmine` manager applied
(lists atomic, as the CRDs used here declare theirs); fields another manager owns kept;
409 `Conflict` when the apply changes a field another manager owns and `force` is not set;
422 `Invalid` when the object breaks its published schema. Every request is recorded
(method, path, query, content type, body) for the tests to assert.

`script` mode replays a fixed list of recorded responses in order instead.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

Manifest = dict[str, Any]
NOW = "2026-11-30T08:00:00Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


def status(code: int, reason: str, message: str, **details: Any) -> Manifest:
    """A `Status` object as the API server returns it with an error code."""
    out: Manifest = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def fields_v1(value: Any) -> Any:
    """The `fieldsV1` set of an applied object (lists atomic: owned whole)."""
    if isinstance(value, dict) and value:
        return {f"f:{k}": fields_v1(v) for k, v in value.items()}
    return {}


def _deep_merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for k, v in top.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(top)


def _paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict) and value:
        return {p for k, v in value.items() for p in _paths(v, f"{prefix}.{k}")}
    return {prefix}


@dataclass
class ApiServerDouble:
    """The state of the cluster this server fronts (one object per path)."""

    validate: Callable[[Manifest], list[str]] | None = None
    defaults: Callable[[Manifest], Manifest] | None = None
    # called after each successful apply, as the resource's controller would (e.g. status)
    controller: Callable[[Manifest], None] | None = None
    objects: dict[str, Manifest] = field(default_factory=dict)
    # fields set by another field manager, per path: (manager, partial object)
    others: dict[str, tuple[str, Manifest]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # per request, in order
    script: list[tuple[int, Manifest]] | None = None
    counter: int = 0

    def patches(self) -> int:
        return sum(r.method == "PATCH" for r in self.requests)

    # -- the API's answers ---------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], ctype: str | None, raw: bytes
    ) -> tuple[int, Manifest]:
        body = yaml.safe_load(raw) if raw else None  # apply-patch+yaml: JSON is YAML
        self.requests.append(Recorded(method, path, query, ctype, body))
        if self.script is not None:
            return self.script.pop(0)
        name = path.rsplit("/", 1)[-1]
        plural = path.split("/")[-2]
        if method == "GET":
            found = self.objects.get(path)
            if found is None:
                return 404, status(
                    404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural
                )
            return 200, copy.deepcopy(found)
        if method == "PATCH":
            return self._apply(path, name, plural, query, ctype, body)
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")

    def _apply(
        self, path: str, name: str, plural: str, query: dict[str, str], ctype: str | None, body: Any
    ) -> tuple[int, Manifest]:
        if ctype != "application/apply-patch+yaml" or not query.get("fieldManager"):
            return 400, status(400, "BadRequest", "not a server-side apply request")
        manager = query["fieldManager"]
        if self.validate is not None and (errors := self.validate(body)):
            return 422, status(
                422,
                "Invalid",
                f'{body.get("kind")} "{name}" is invalid: {"; ".join(errors)}',
                name=name,
                kind=body.get("kind"),
                causes=[{"reason": "FieldValueInvalid", "message": e} for e in errors],
            )
        other = self.others.get(path)
        if other is not None and query.get("force") != "true":
            mine = _paths({k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
            theirs = _paths(other[1])
            if clash := sorted(mine & theirs):
                return 409, status(
                    409,
                    "Conflict",
                    f'Apply failed with {len(clash)} conflict(s): conflict with "{other[0]}": '
                    + ", ".join(clash),
                    name=name,
                    kind=body.get("kind"),
                    causes=[{"reason": "FieldManagerConflict", "field": c} for c in clash],
                )
        if other is not None and query.get("force") == "true":
            # forced: the fields we apply become ours, the rest stay the other manager's
            mine = _paths({k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
            self.others[path] = (other[0], _without(other[1], mine))
            other = self.others[path]
        old = self.objects.get(path)
        applied = {k: v for k, v in body.items() if k != "metadata"}
        applied["metadata"] = {
            k: v for k, v in body["metadata"].items() if k in ("labels", "annotations")
        }
        merged = _deep_merge(other[1] if other else {}, applied)
        if self.defaults is not None:
            merged = self.defaults(merged)
        self.counter += 1
        meta = merged["metadata"]
        meta.update(name=name, namespace=body["metadata"]["namespace"])
        meta["uid"] = (old or {}).get("metadata", {}).get("uid", f"uid-{self.counter}")
        meta["creationTimestamp"] = NOW
        meta["resourceVersion"] = str(self.counter)
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        changed = old is None or old.get("spec") != merged.get("spec")
        meta["generation"] = generation + 1 if changed else generation
        entries = [
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": body["apiVersion"],
                "time": NOW,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(_without_identity(body)),
            },
        ]
        if other is not None:
            entries.append(
                {
                    "manager": other[0],
                    "operation": "Update",
                    "apiVersion": body["apiVersion"],
                    "time": NOW,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields_v1(other[1]),
                }
            )
        meta["managedFields"] = entries
        if old is not None and "status" in old:
            merged["status"] = copy.deepcopy(old["status"])
        self.objects[path] = merged
        if self.controller is not None:
            self.controller(merged)
        return (201 if old is None else 200), copy.deepcopy(merged)


def _without_identity(body: Manifest) -> Manifest:
    out = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    out["metadata"] = {k: v for k, v in body["metadata"].items() if k not in ("name", "namespace")}
    return out


def _without(value: Manifest, paths: set[str], prefix: str = "") -> Manifest:
    out = {}
    for k, v in value.items():
        here = f"{prefix}.{k}"
        if here in paths:
            continue
        out[k] = _without(v, paths, here) if isinstance(v, dict) else v
    return out


class _Handler(BaseHTTPRequestHandler):
    double: ApiServerDouble
    lock: threading.Lock

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.double.authorizations.append(self.headers.get("Authorization"))
            code, body = self.double.handle(
                self.command, parts.path, query, self.headers.get("Content-Type"), raw
            )
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def api_server(double: ApiServerDouble) -> Iterator[str]:
    """Serve `double` on a loopback port; yields the base URL for the client."""
    handler = type("Handler", (_Handler,), {"double": double, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def client_for(url: str) -> Any:
    """The official client pointed at `url` (what a kubeconfig would give it)."""
    from kubernetes.client import ApiClient, Configuration

    configuration = Configuration(host=url)
    return ApiClient(configuration)

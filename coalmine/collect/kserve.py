"""The KServe inference logger collector: logged calls become prediction-log rows.

Point an InferenceService's logger at `http://COALMINE_API/collect/kserve/<secret>`
(`spec.predictor.logger: {mode: all, url: ...}`). Each call's request and response events
are paired (`pairing.Pairer`), the InferenceService and KServe endpoint are mapped to a
model and role (`collect.kserve.services`; default: the model of the service's name, stable
for KServe's default endpoint, canary for its canary endpoint), the version is the one the
live route gives that role, and the bodies are read with the gateway's protocol parsers
(KServe V1 or Open Inference Protocol V2, told apart by the answer). A shadow
InferenceService that a mesh mirrors to logs the same request id (the request's `Ce-Id`,
or the header `request_id_header` the logger forwards in ce-metadata), so the shadow
comparison pairs its rows with production's as it does the gateway's.

Latency is the time between the two events' `ce-time` (the logger stamps each when it sends
it), which includes the logger's queueing: a close estimate, not the gateway's
measurement. Nothing an event holds chooses a host or code: the collector only writes rows.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict
from sqlalchemy import Engine

from coalmine.collect import metrics
from coalmine.collect.cloudevents import EventError, LoggedEvent, read_event
from coalmine.collect.pairing import Pairer, Waiting
from coalmine.collect.store import insert_new
from coalmine.config import KServeCollectorConfig, ModelConfig
from coalmine.gateway.protocols import V1, V2
from coalmine.log.policy import InputPolicy, JsonTooDeep, extract_slices, loads_bounded
from coalmine.log.record import PredictionRecord
from coalmine.routing.state import RouteState
from coalmine.store.routes import RouteRepository

__all__ = ["Answer", "KServeCollector"]

log = logging.getLogger(__name__)
_SOURCE = "kserve"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


def _count(outcome: str, n: int = 1) -> None:
    if n:
        metrics.EVENTS.labels(_SOURCE, outcome).inc(n)


class KServeCollector:
    """Turns logger events into rows; thread-safe (one lock around the pairing)."""

    def __init__(
        self,
        engine: Engine,
        config: KServeCollectorConfig,
        models: Mapping[str, ModelConfig],
        policy: InputPolicy,
    ) -> None:
        self.engine = engine
        self.config = config
        self.models = dict(models)
        self.policy = policy
        self.routes = RouteRepository(engine)
        self.pairer = Pairer(config.pair_timeout_s, config.max_pending)
        self._lock = threading.Lock()

    # -- mapping ----------------------------------------------------------------------------
    def _model_and_role(self, event: LoggedEvent) -> tuple[str, str] | None:
        for entry in self.config.services:
            if entry.service == event.service and entry.namespace in (None, event.namespace):
                return entry.model, entry.role or self._endpoint_role(event)
        if event.service in self.models:
            return event.service, self._endpoint_role(event)
        return None

    @staticmethod
    def _endpoint_role(event: LoggedEvent) -> str:
        return "canary" if event.endpoint == "canary" else "stable"

    @staticmethod
    def _version(route: RouteState, role: str) -> str | None:
        if role == "baseline":  # a fresh instance of the stable version
            return route.stable
        return {"stable": route.stable, "canary": route.canary, "shadow": route.shadow}[role]

    # -- one event ----------------------------------------------------------------------------
    def handle(self, headers: Mapping[str, str], body: bytes, now: float) -> Answer:
        """Take one event; writes the rows of the calls it completes (and of calls whose
        answer never came, when `unanswered` is "error")."""
        try:
            event = read_event(headers, body)
        except EventError as exc:
            _count("invalid")
            return Answer(400, {"error": str(exc), "errors": [
                {"field": exc.field, "reason": exc.reason}]})  # fmt: skip
        if event.component != "predictor":  # a transformer's or explainer's call
            _count("ignored")
            return Answer(200, {"status": "ignored", "reason": f"component {event.component}"})
        if self._model_and_role(event) is None:
            _count("unknown_service")
            return Answer(422, {
                "error": f"no model for InferenceService {event.service!r}",
                "errors": [{"field": "ce-inferenceservicename",
                            "reason": "not in collect.kserve.services nor a model's name"}],
            })  # fmt: skip
        with self._lock:
            expired = self.pairer.expire(now)
            before = self.pairer.evicted, self.pairer.repeated
            pair = self.pairer.add(event, now)
            evicted = self.pairer.evicted - before[0]
            repeated = self.pairer.repeated - before[1]
        _count("evicted", evicted)
        _count("repeated", repeated)
        _count("expired", len(expired))
        _count("paired" if pair else "waiting")
        records = self._records(pair, expired, now)
        if records:
            done = insert_new(self.engine, records)
            metrics.ROWS.labels(_SOURCE, "written").inc(done.written)
            metrics.ROWS.labels(_SOURCE, "duplicate").inc(done.duplicates)
        # 200, not 202: KServe's logger logs any other status as an error, event by event
        return Answer(200, {"status": "paired" if pair else "waiting"})

    def _records(
        self, pair: tuple[Waiting, Waiting] | None, expired: list[Waiting], now: float
    ) -> list[PredictionRecord]:
        unanswered = [
            w for w in expired if w.event.kind == "request" and self.config.unanswered == "error"
        ]
        if pair is None and not unanswered:
            return []
        live = self.routes.load_all()
        out = []
        if pair is not None:
            out.append(self._record(live, pair[0], pair[1], now))
        out += [self._record(live, w, None, now) for w in unanswered]
        written = [r for r in out if r is not None]
        _count("unrouted", len(out) - len(written))
        return written

    def _record(
        self, live: Mapping[str, RouteState], request: Waiting, response: Waiting | None,
        now: float,
    ) -> PredictionRecord | None:  # fmt: skip
        event = request.event
        mapped = self._model_and_role(event)
        route = live.get(mapped[0]) if mapped else None
        if mapped is None or route is None:
            return None
        model, role = mapped
        version = self._version(route, role)
        if version is None:  # e.g. KServe's canary endpoint while Coalmine has no canary
            return None
        config = self.models.get(model)
        parsed: Any = None
        try:
            parsed = loads_bounded(event.body)
        except (ValueError, UnicodeDecodeError, JsonTooDeep):
            parsed = None
        try:
            shaped = self.policy.shape_input(event.body if parsed is None else parsed)
        except JsonTooDeep:
            shaped = None
        headers = CIMultiDict((k, v[0]) for k, v in event.metadata.items() if v)
        slices = extract_slices(config.slices, headers, parsed) if config else {}
        prediction = scores = None
        if response is not None:
            prediction, scores = _answer(response.event.body, config.scores if config else None)
            if request.event.time is not None and response.event.time is not None:
                latency = response.event.time - request.event.time
            else:
                latency = response.arrived - request.arrived
        else:
            latency = now - request.arrived
        rid_header = self.config.request_id_header
        request_id = (event.header(rid_header) if rid_header else None) or event.id
        return PredictionRecord(
            request_id=request_id,
            model=model,
            version=version,
            role=role,
            ts=event.time if event.time is not None else request.arrived,
            latency_ms=max(0.0, latency * 1000.0),
            status=200 if response is not None else 0,  # KServe logs only 200 answers
            error_class=None,
            prediction=prediction,
            input=shaped,
            slices=slices,
            canary_weight_bp=route.canary_weight_bp,
            rollout_id=route.rollout_id,
            scores=scores,
        )


def _answer(body: bytes, scores_field: str | None) -> tuple[Any, Any]:
    """(prediction, scores) of a V1 or V2 answer, told apart by V2's `outputs`."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    protocol = V2 if isinstance(obj, dict) and "outputs" in obj else V1
    return protocol.extract(obj, scores_field)

"""The aiohttp application of `coalmine serve-model`: routes, error shaping, fault injection.

Inference runs inline on the event loop: scikit-learn predictions on a handful of rows take
well under a millisecond, less than a hop to a thread pool would cost.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coalmine.binary_tensors import HEADER_LENGTH, BinaryTensorError
from coalmine.modelserver.binary import read_v2_request, write_v2_response
from coalmine.modelserver.model import InputError, LoadedModel, Prediction
from coalmine.modelserver.protocols import predict_plain, predict_v1, predict_v2
from coalmine.modelserver.resources import ResourceFaults, add_metrics_route

__all__ = ["Faults", "build_app"]

MODEL_KEY = web.AppKey("model", LoadedModel)


@dataclass
class Faults:
    """Injected misbehaviour, for tests and the demo's bad candidates."""

    delay_ms: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    # a nondeterministic model: this share of answers is replaced by another class at
    # random (sampling, racy features, GPU nondeterminism); what a baseline's noise floor
    # measures
    flip_rate: float = 0.0
    # CPU spent and memory kept per inference call (modelserver/resources.py)
    burn_cpu_ms: float = 0.0
    leak_kb: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        for name in ("error_rate", "flip_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        self._rng = random.Random(self.seed)
        self.resources = ResourceFaults(self.burn_cpu_ms, self.leak_kb)

    def should_fail(self) -> bool:
        return self.error_rate > 0 and self._rng.random() < self.error_rate

    def flip(self, prediction: Prediction, classes: list[Any]) -> Prediction:
        """Replace each answer by another class with probability `flip_rate`.

        The probability row swaps the two classes' columns, so argmax and label agree.
        """
        labels = list(prediction.labels)
        probabilities = [list(r) for r in prediction.probabilities or []] or None
        for i, label in enumerate(labels):
            if self._rng.random() >= self.flip_rate or label not in classes:
                continue
            other = self._rng.choice([c for c in classes if c != label])
            labels[i] = other
            if probabilities is not None:
                a, b = classes.index(label), classes.index(other)
                row = probabilities[i]
                row[a], row[b] = row[b], row[a]
        return Prediction(labels=labels, probabilities=probabilities)


FAULTS_KEY = web.AppKey("faults", Faults)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


Handler = Callable[[LoadedModel, Any], dict[str, Any]]


def _unknown(request: web.Request, model: LoadedModel) -> web.Response | None:
    """A 404 when the path names another model, or another version than the one served."""
    if request.match_info["name"] != model.name:
        return _error(404, f"model {request.match_info['name']!r} not found")
    version = request.match_info.get("version")
    if version is not None and version != model.version:
        return _error(404, f"model {model.name!r} has no version {version!r}")
    return None


def _inference(
    protocol: Handler, *, v2: bool = False
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        model = request.app[MODEL_KEY]
        unknown = _unknown(request, model)
        if unknown is not None:
            return unknown
        faults = request.app[FAULTS_KEY]
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        if faults.should_fail():
            return _error(500, "injected error (--error-rate)")
        faults.resources.apply()
        raw = await request.read()
        try:
            body = (
                read_v2_request(raw, request.headers.get(HEADER_LENGTH)) if v2 else json.loads(raw)
            )
        except BinaryTensorError as exc:
            return _error(400, f"invalid binary tensor body: {exc}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"invalid JSON body: {exc}")
        try:
            if v2:  # the outputs and their encoding (JSON or raw) as the request asked
                payload, headers = write_v2_response(body, protocol(model, body))
                return web.Response(body=payload, headers=headers)
            return web.json_response(protocol(model, body))
        except InputError as exc:
            return _error(400, str(exc))
        except (ValueError, TypeError) as exc:  # the estimator itself refused the input
            return _error(400, f"model rejected the input: {exc}")

    return handle


def _for_model(
    respond: Callable[[LoadedModel], dict[str, Any]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        model = request.app[MODEL_KEY]
        unknown = _unknown(request, model)
        if unknown is not None:
            return unknown
        return web.json_response(respond(model))

    return handle


def _v1_metadata(model: LoadedModel) -> dict[str, Any]:
    return {"ready": True, **model.metadata()}


def _v2_metadata(model: LoadedModel) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]
    if model.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, model.n_features or -1]}],
        "outputs": outputs,
        "parameters": model.metadata(),
    }


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "ready": True})


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, f"no route {request.method} {request.path}")


def build_app(model: LoadedModel, faults: Faults | None = None) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    faults = faults or Faults()
    app[MODEL_KEY] = model
    app[FAULTS_KEY] = faults
    classes = model.classes
    if faults.flip_rate > 0 and classes is not None and len(classes) > 1:
        model.flip = lambda p: faults.flip(p, classes)
    app.router.add_post("/v1/models/{name}:predict", _inference(predict_v1))
    v2_infer = _inference(predict_v2, v2=True)
    app.router.add_post("/v2/models/{name}/infer", v2_infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", v2_infer)
    app.router.add_post("/models/{name}/predict", _inference(predict_plain))
    app.router.add_get("/v1/models/{name}", _for_model(_v1_metadata))
    ready = _for_model(lambda m: {"name": m.name, "ready": True})
    for model_path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(model_path, _for_model(_v2_metadata))
        app.router.add_get(model_path + "/ready", ready)
    app.router.add_get("/v1/models", _list)
    app.router.add_get("/v2/health/ready", _ok)
    app.router.add_get("/v2/health/live", _ok)
    app.router.add_get("/healthz", _ok)
    add_metrics_route(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def _list(request: web.Request) -> web.Response:
    return web.json_response({"models": [request.app[MODEL_KEY].name]})

"""`coalmine serve-model`: serve a scikit-learn model over KServe V1, Open Inference V2 and
plain JSON, with injectable latency and errors; `start_model_server` runs one as a process."""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coalmine.modelserver.app import Faults, build_app
    from coalmine.modelserver.model import InputError, LoadedModel, load_model
    from coalmine.modelserver.process import (
        ModelServerHandle,
        start_model_server,
        start_model_server_async,
    )

__all__ = [
    "Faults",
    "InputError",
    "LoadedModel",
    "ModelServerHandle",
    "build_app",
    "load_model",
    "start_model_server",
    "start_model_server_async",
]

# Loaded on first use: aiohttp, numpy and joblib cost ~0.3 s, and `coalmine --help` imports
# `coalmine.modelserver.command`, which runs this file first.
_SOURCES = {
    "Faults": "app",
    "build_app": "app",
    "InputError": "model",
    "LoadedModel": "model",
    "load_model": "model",
    "ModelServerHandle": "process",
    "start_model_server": "process",
    "start_model_server_async": "process",
}


def __getattr__(name: str) -> object:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value
    return value

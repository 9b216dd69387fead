"""`coalmine serve-model`: serve a scikit-learn model over KServe V1, Open Inference V2 and
plain JSON, with injectable latency and errors; `start_model_server` runs one as a process."""

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

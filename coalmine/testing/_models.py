"""`serve_estimator()`: a fitted scikit-learn estimator served by a real model-server process."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coalmine.modelserver.process import ModelServerHandle

__all__ = ["serve_estimator"]


def serve_estimator(
    estimator: Any,
    name: str,
    version: str = "1",
    *,
    log_dir: str | Path | None = None,
    **options: Any,
) -> ModelServerHandle:
    """Save `estimator` with joblib and serve it with `coalmine serve-model` in its own
    process on a free loopback port; returns once it answers. Use the handle as a context
    manager or call `.stop()`; `.url` is its base URL.

    `options` go to `start_model_server`: `delay_ms`, `error_rate`, `flip_rate` and `seed`
    inject latency, 500s and wrong answers, to test that a pipeline rejects such versions.
    The server's stderr goes to a file in `log_dir` (default: a temporary directory);
    `.log()` returns it.
    """
    import joblib

    from coalmine.modelserver.process import start_model_server

    folder = Path(tempfile.mkdtemp(prefix=f"coalmine-model-{name}-"))
    path = folder / f"{name}-{version}.joblib"
    joblib.dump(estimator, path)
    try:
        return start_model_server(
            path, name=name, version=version, log_dir=log_dir or folder, **options
        )
    finally:
        path.unlink(missing_ok=True)  # loaded before the server announced itself

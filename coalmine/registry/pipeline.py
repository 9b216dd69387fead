"""The pipeline side: turn a registry URI into a candidate Coalmine can roll out.

    registry = make_registry("mlflow", tracking_uri="sqlite:///mlflow.db")
    candidate = prepare_candidate(registry, "models:/iris@challenger", model="iris")
    server = start_model_server(candidate.local_path, name="iris", version=candidate.candidate)
    client.start_rollout("iris", candidate=candidate.candidate, url=server.url)

The link written here is what lets the controller's `RegistryListener` find the registry
version again when the rollout ends, even after a restart.
"""

from __future__ import annotations

from coalmine.registry.base import ModelRegistry, ResolvedModel

__all__ = ["prepare_candidate"]


def prepare_candidate(
    registry: ModelRegistry, uri: str, model: str, candidate: str | None = None
) -> ResolvedModel:
    """Resolve `uri`, export it, and link it to `model` as `candidate` (default
    `<registered name>-<version>`). Idempotent."""
    resolved = registry.resolve(uri)
    name = candidate or resolved.candidate
    registry.link(resolved.ref, model, name)
    if name == resolved.candidate:
        return resolved
    return ResolvedModel(
        name=resolved.name,
        version=resolved.version,
        local_path=resolved.local_path,
        source_uri=resolved.source_uri,
        candidate=name,
    )

"""The model-registry interface: where rollout candidates come from and where outcomes go.

A retraining pipeline names its candidate by a registry URI (`models:/NAME/VERSION`,
`models:/NAME@alias`); a registry turns that into a file `coalmine serve-model` can serve,
remembers which Coalmine model/candidate it became, and records the rollout's outcome back
in the registry. One implementation a file (`mlflow_registry.py`), chosen by name through
`registry.py`.

Every write is idempotent: the controller applies each transition exactly once, but the
listener retries, and an operator may replay an outcome; a second call changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "OUTCOME_TAG",
    "REASON_TAG",
    "ROLLOUT_TAG",
    "ModelRegistry",
    "ModelVersionRef",
    "RegistryError",
    "ResolvedModel",
]

# tag keys written on a registry version when a rollout of it ends
OUTCOME_TAG = "coalmine.outcome"  # promoted | rolled_back
REASON_TAG = "coalmine.reason"  # the controller's reason, with its numbers
ROLLOUT_TAG = "coalmine.rollout_id"


class RegistryError(Exception):
    """A registry request that cannot be served: `subject` (the URI or model) and `reason`."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"{subject}: {reason}")


@dataclass(frozen=True, slots=True)
class ModelVersionRef:
    """One version of a registered model, as the registry names it."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A registry version made servable.

    local_path: a joblib file for `coalmine serve-model`;
    source_uri: the URI as the pipeline gave it (an alias is resolved to `version`);
    candidate: the Coalmine version name to roll it out under (unique per name and version).
    """

    name: str
    version: str
    local_path: Path
    source_uri: str
    candidate: str

    @property
    def ref(self) -> ModelVersionRef:
        return ModelVersionRef(self.name, self.version)


@runtime_checkable
class ModelRegistry(Protocol):
    """What Coalmine needs of a model registry. All writes are idempotent."""

    def resolve(self, uri: str) -> ResolvedModel:
        """Find the version `uri` names and export it as a joblib file; RegistryError if none."""
        ...

    def link(self, version: ModelVersionRef, model: str, candidate: str) -> None:
        """Record that Coalmine model `model` rolls this version out as `candidate`."""
        ...

    def find(self, model: str, candidate: str) -> ModelVersionRef | None:
        """The version linked to `model`/`candidate`, or None (not a registry candidate)."""
        ...

    def on_promoted(self, version: ModelVersionRef, rollout_id: int, reason: str) -> None:
        """Move the champion alias to this version and tag it with the outcome."""
        ...

    def on_rolled_back(self, version: ModelVersionRef, rollout_id: int, reason: str) -> None:
        """Tag this version with the rollback and its reason; aliases stay where they are."""
        ...

    def on_model_rollback(
        self,
        replaced: ModelVersionRef | None,
        restored: ModelVersionRef | None,
        rollout_id: int,
        reason: str,
    ) -> None:
        """`coalmine rollback`: tag `replaced` rolled back with the reason and move the
        champion alias back to `restored`; when the restored version is not in the registry,
        take the alias off `replaced` (it no longer serves). Either may be None."""
        ...

    def recorded(self, version: ModelVersionRef) -> tuple[str, str] | None:
        """The (outcome, rollout id) last written on this version, or None."""
        ...

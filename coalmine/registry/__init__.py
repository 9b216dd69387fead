"""Model registries: candidates given as `models:/NAME/VERSION` or `models:/NAME@alias`,
outcomes written back (alias `champion` on promotion, tags on rollback).

`mlflow` is an optional extra: nothing here imports it until an MlflowRegistry is built.
"""

from coalmine.registry.base import (
    OUTCOME_TAG,
    REASON_TAG,
    ROLLOUT_TAG,
    ModelRegistry,
    ModelVersionRef,
    RegistryError,
    ResolvedModel,
)
from coalmine.registry.listener import RegistryListener
from coalmine.registry.pipeline import prepare_candidate
from coalmine.registry.registry import (
    REGISTRIES,
    make_registry,
    register_registry,
    registry_from_env,
)
from coalmine.registry.uri import ModelURI, candidate_name, parse_model_uri

__all__ = [
    "OUTCOME_TAG",
    "REASON_TAG",
    "REGISTRIES",
    "ROLLOUT_TAG",
    "ModelRegistry",
    "ModelURI",
    "ModelVersionRef",
    "RegistryError",
    "RegistryListener",
    "ResolvedModel",
    "candidate_name",
    "make_registry",
    "parse_model_uri",
    "prepare_candidate",
    "register_registry",
    "registry_from_env",
]

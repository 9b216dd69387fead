"""Parse `models:/NAME/VERSION`, `models:/NAME@alias` and `models:/NAME/latest` (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coalmine.registry.base import RegistryError

__all__ = ["ModelURI", "candidate_name", "parse_model_uri"]

_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


@dataclass(frozen=True, slots=True)
class ModelURI:
    """Exactly one of `version`, `alias`, `latest` says which version of `name` is meant."""

    name: str
    version: str | None = None
    alias: str | None = None
    latest: bool = False


def parse_model_uri(uri: str) -> ModelURI:
    """The parts of a registry model URI; RegistryError saying what is wrong otherwise."""
    if not isinstance(uri, str) or not uri.startswith("models:/"):
        raise RegistryError(str(uri), "expected models:/NAME/VERSION or models:/NAME@alias")
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if not name:
            raise RegistryError(uri, "the registered model name is empty")
        if not _ALIAS.match(alias):
            raise RegistryError(uri, f"alias {alias!r} is not a valid alias name")
        return ModelURI(name=name, alias=alias)
    name, sep, version = rest.rpartition("/")
    if not sep or not name:
        raise RegistryError(uri, "expected models:/NAME/VERSION or models:/NAME@alias")
    if version == "latest":
        return ModelURI(name=name, latest=True)
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        # stages (Production, Staging) are deprecated in MLflow; aliases replace them
        raise RegistryError(
            uri, f"version {version!r} is not a version number, 'latest' or an @alias"
        )
    return ModelURI(name=name, version=str(int(version)))


def candidate_name(name: str, version: str) -> str:
    """A Coalmine version name for a registry version: `<name>-<version>`, made safe.

    Coalmine version names allow [A-Za-z0-9._-] up to 63 characters; the registry's name is
    slugged and cut so the version number always survives.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._") or "model"
    return f"{slug[: 62 - len(version)]}-{version}"

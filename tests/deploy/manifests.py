"""The Kubernetes manifests of deploy/kubernetes/, loaded as the kustomize base lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
SECRET_EXAMPLE = BASE / "examples" / "secret.yaml"


def load_all(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kustomization() -> dict[str, Any]:
    docs = load_all(BASE / "kustomization.yaml")
    assert len(docs) == 1
    return docs[0]


def base_objects() -> list[dict[str, Any]]:
    """Every object of the base, in the order kustomization.yaml lists its files."""
    return [obj for name in kustomization()["resources"] for obj in load_all(BASE / name)]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())

"""The MLflow Model Registry (optional extra `mlflow`).

Works against any MLflow tracking/registry URI: a local `sqlite:///…/mlflow.db`, a
`file:` store or an MLflow server. `mlflow` is imported only when an `MlflowRegistry` is
built, so the core package never needs it.

Export: the version's artefacts are downloaded, the `sklearn` flavour is read from its
MLmodel file, and the estimator is written to a joblib file for `coalmine serve-model`.
Pickle and cloudpickle models are copied as they are (joblib reads plain pickles), so the
resolving process never unpickles anything; skops models are loaded by skops (safe, with the
model's own trusted-type list) and written with joblib. Registry versions are immutable, so
an export is cached per registry, name and version.

Links and outcomes are model-version tags (`coalmine.model`, `coalmine.candidate`,
`coalmine.outcome`, ...); promotion moves the registered-model alias `champion`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import yaml

from coalmine.registry.base import (
    OUTCOME_TAG,
    REASON_TAG,
    ROLLOUT_TAG,
    ModelVersionRef,
    RegistryError,
    ResolvedModel,
)
from coalmine.registry.uri import candidate_name, parse_model_uri

__all__ = ["CANDIDATE_TAG", "MODEL_TAG", "MlflowRegistry"]

log = logging.getLogger(__name__)

MODEL_TAG = "coalmine.model"
CANDIDATE_TAG = "coalmine.candidate"
# MLflow caps registry tag values (5000 characters on some stores); reasons stay well below
_MAX_TAG_VALUE = 4000
_INSTALL_HINT = "MLflow support needs the 'mlflow' extra: pip install 'coalmine[mlflow]'"


def _import_mlflow() -> Any:
    try:
        import mlflow
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException  # noqa: F401  (part of the check)
    except ImportError as exc:
        raise RegistryError("mlflow", f"{_INSTALL_HINT} ({exc})") from None
    return mlflow


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    # a missing alias is reported as INVALID_PARAMETER_VALUE by MLflow's SQL store
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _cut(value: str) -> str:
    if len(value) <= _MAX_TAG_VALUE:
        return value
    return value[: _MAX_TAG_VALUE - 12] + " …[truncated]"


class MlflowRegistry:
    """`ModelRegistry` over `mlflow.MlflowClient`.

    tracking_uri / registry_uri: None = MLflow's own defaults ($MLFLOW_TRACKING_URI, ...);
    champion_alias: the alias promotion moves; cache_dir: where exports are kept.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        *,
        champion_alias: str = "champion",
        cache_dir: str | Path | None = None,
    ) -> None:
        self._mlflow = _import_mlflow()
        from mlflow.exceptions import MlflowException

        self._error_type: type[Exception] = MlflowException
        self.tracking_uri = tracking_uri or self._mlflow.get_tracking_uri()
        self.registry_uri = registry_uri or tracking_uri or self._mlflow.get_registry_uri()
        self.client = self._mlflow.MlflowClient(
            tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
        )
        self.champion_alias = champion_alias
        root = Path(cache_dir) if cache_dir is not None else _default_cache()
        # one directory per registry, so two registries' `iris/3` never share an export
        self.cache_dir = root / hashlib.sha256(self.registry_uri.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"MlflowRegistry(registry_uri={self.registry_uri!r})"

    # -- resolve ----------------------------------------------------------------------------

    def resolve(self, uri: str) -> ResolvedModel:
        parsed = parse_model_uri(uri)
        version = self._lookup(uri, parsed.name, parsed.version, parsed.alias, parsed.latest)
        status = str(getattr(version, "status", "READY"))
        if status != "READY":
            raise RegistryError(uri, f"version {version.version} is {status}, not READY")
        name, number = str(version.name), str(version.version)
        target = self.cache_dir / candidate_name(name, number) / "model.joblib"
        if not target.exists():
            self._export(uri, name, number, target)
        return ResolvedModel(
            name=name,
            version=number,
            local_path=target,
            source_uri=uri,
            candidate=candidate_name(name, number),
        )

    def _lookup(
        self, uri: str, name: str, version: str | None, alias: str | None, latest: bool
    ) -> Any:
        try:
            self.client.get_registered_model(name)
        except self._error_type as exc:
            if _not_found(exc):
                raise RegistryError(uri, f"no registered model named {name!r}") from None
            raise RegistryError(uri, f"the registry refused: {exc}") from exc
        try:
            if alias is not None:
                return self.client.get_model_version_by_alias(name, alias)
            if latest:
                found = self.client.search_model_versions(f"name = '{_quote(name)}'")
                if not found:
                    raise RegistryError(uri, f"registered model {name!r} has no versions")
                return max(found, key=lambda v: int(v.version))
            return self.client.get_model_version(name, str(version))
        except self._error_type as exc:
            if not _not_found(exc):
                raise RegistryError(uri, f"the registry refused: {exc}") from exc
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise RegistryError(uri, f"registered model {name!r} has no {what}") from None

    def _export(self, uri: str, name: str, version: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            try:
                # the version's storage location, not `models:/…`: MLflow resolves the latter
                # against the global registry URI whatever registry_uri says
                location = self.client.get_model_version_download_uri(name, version)
                local = self._mlflow.artifacts.download_artifacts(
                    artifact_uri=location,
                    dst_path=str(workdir),
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.registry_uri,
                )
            except self._error_type as exc:
                raise RegistryError(uri, f"cannot download the model: {exc}") from exc
            staged = workdir / "model.joblib.tmp"
            _write_joblib(uri, Path(local), staged)
            # rename is atomic: a concurrent resolve sees no file or a whole one
            os.replace(staged, target)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # -- links --------------------------------------------------------------------------------

    def link(self, version: ModelVersionRef, model: str, candidate: str) -> None:
        for other in self._linked(model, candidate):
            if (str(other.name), str(other.version)) != (version.name, version.version):
                # a candidate name points at one registry version; a retrain reusing the
                # name takes the link over
                other_ref = ModelVersionRef(str(other.name), str(other.version))
                with self._errors(other_ref, "untag"):
                    self.client.delete_model_version_tag(other.name, other.version, MODEL_TAG)
                    self.client.delete_model_version_tag(other.name, other.version, CANDIDATE_TAG)
        self._tag(version, {MODEL_TAG: model, CANDIDATE_TAG: candidate})

    def find(self, model: str, candidate: str) -> ModelVersionRef | None:
        found = self._linked(model, candidate)
        if not found:
            return None
        newest = max(found, key=lambda v: (int(v.last_updated_timestamp or 0), int(v.version)))
        return ModelVersionRef(str(newest.name), str(newest.version))

    def _linked(self, model: str, candidate: str) -> list[Any]:
        query = (
            f"tags.`{MODEL_TAG}` = '{_quote(model)}' "
            f"AND tags.`{CANDIDATE_TAG}` = '{_quote(candidate)}'"
        )
        try:
            return list(self.client.search_model_versions(query))
        except self._error_type as exc:
            raise RegistryError(f"{model}/{candidate}", f"the registry refused: {exc}") from exc

    # -- outcomes -----------------------------------------------------------------------------

    def on_promoted(self, version: ModelVersionRef, rollout_id: int, reason: str) -> None:
        # setting an alias moves it: MLflow keeps one version per alias
        with self._errors(version, f"move alias {self.champion_alias!r}"):
            self.client.set_registered_model_alias(
                version.name, self.champion_alias, version.version
            )
        self._tag(
            version,
            {OUTCOME_TAG: "promoted", REASON_TAG: reason, ROLLOUT_TAG: str(rollout_id)},
        )

    def on_rolled_back(self, version: ModelVersionRef, rollout_id: int, reason: str) -> None:
        self._tag(
            version,
            {OUTCOME_TAG: "rolled_back", REASON_TAG: reason, ROLLOUT_TAG: str(rollout_id)},
        )

    def on_model_rollback(
        self,
        replaced: ModelVersionRef | None,
        restored: ModelVersionRef | None,
        rollout_id: int,
        reason: str,
    ) -> None:
        if replaced is not None:
            self.on_rolled_back(replaced, rollout_id, reason)
        if restored is not None:
            with self._errors(restored, f"move alias {self.champion_alias!r}"):
                self.client.set_registered_model_alias(
                    restored.name, self.champion_alias, restored.version
                )
        elif replaced is not None and self.champion(replaced.name) == replaced:
            with self._errors(replaced, f"delete alias {self.champion_alias!r}"):
                self.client.delete_registered_model_alias(replaced.name, self.champion_alias)

    def recorded(self, version: ModelVersionRef) -> tuple[str, str] | None:
        with self._errors(version, "read tags"):
            tags = self.client.get_model_version(version.name, version.version).tags or {}
        if OUTCOME_TAG not in tags:
            return None
        return str(tags[OUTCOME_TAG]), str(tags.get(ROLLOUT_TAG, ""))

    def champion(self, name: str) -> ModelVersionRef | None:
        """The version the champion alias points at, or None."""
        try:
            v = self.client.get_model_version_by_alias(name, self.champion_alias)
        except self._error_type as exc:
            if _not_found(exc):
                return None
            raise RegistryError(name, f"the registry refused: {exc}") from exc
        return ModelVersionRef(str(v.name), str(v.version))

    def _tag(self, version: ModelVersionRef, tags: dict[str, str]) -> None:
        with self._errors(version, "tag"):
            for key, value in tags.items():
                self.client.set_model_version_tag(version.name, version.version, key, _cut(value))

    @contextlib.contextmanager
    def _errors(self, version: ModelVersionRef, what: str) -> Iterator[None]:
        """MLflow's exceptions as RegistryError naming the version and the operation."""
        try:
            yield
        except self._error_type as exc:
            subject = f"models:/{version.name}/{version.version}"
            if _not_found(exc):
                raise RegistryError(subject, "no such registered model version") from None
            raise RegistryError(subject, f"the registry refused to {what}: {exc}") from exc


def _quote(value: str) -> str:
    # MLflow's filter grammar quotes with single quotes; refuse rather than escape
    if "'" in value:
        raise RegistryError(value, "names with a single quote cannot be searched in MLflow")
    return value


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coalmine" / "registry"


def _write_joblib(uri: str, model_dir: Path, target: Path) -> None:
    """The sklearn flavour's estimator as a file `joblib.load` reads."""
    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(uri, f"the model has no readable MLmodel file ({exc})") from None
    flavors = (meta or {}).get("flavors") or {}
    conf = flavors.get("sklearn")
    if not isinstance(conf, dict):
        raise RegistryError(
            uri,
            "coalmine serve-model serves scikit-learn models; this model has no 'sklearn' "
            f"flavour (flavours: {', '.join(sorted(flavors)) or 'none'})",
        )
    source = model_dir / str(conf.get("pickled_model", "model.pkl"))
    if not source.is_file():
        raise RegistryError(uri, f"the sklearn flavour's file {source.name} is missing")
    fmt = str(conf.get("serialization_format", "pickle"))
    if fmt in ("pickle", "cloudpickle"):
        shutil.copyfile(source, target)
    elif fmt == "skops":
        try:
            import skops.io
        except ImportError:
            raise RegistryError(
                uri, f"the model is saved with skops; {_INSTALL_HINT} (it includes skops)"
            ) from None
        estimator = skops.io.load(source, trusted=conf.get("skops_trusted_types"))
        joblib.dump(estimator, target)
    else:
        raise RegistryError(uri, f"unknown sklearn serialization format {fmt!r}")

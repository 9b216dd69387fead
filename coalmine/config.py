"""The one declaration of every setting: pydantic models, loaded from YAML.

Users write YAML; the control API and the SDK use the same models. Every model forbids
unknown fields so a typo is an error with its path, not a silently ignored setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from coalmine.config_k8s import GatewayApiTraffic, IstioTraffic, KServeTraffic, KubernetesTraffic

__all__ = [
    "ApiConfig",
    "BaseUrl",
    "BuiltinTraffic",
    "CoalmineConfig",
    "ConfigError",
    "ControllerConfig",
    "GatewayConfig",
    "LoggingConfig",
    "ModelConfig",
    "NginxTraffic",
    "PrometheusSource",
    "RoutingConfig",
    "ShadowConfig",
    "SliceField",
    "StickyKey",
    "StoreConfig",
    "VersionConfig",
    "format_errors",
    "hide_password",
    "load_config",
    "parse_config",
    "read_yaml",
    "reads_json_body",
    "validate_model",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]
# a user metric's function, `module.path:function`, imported by the server at start
USER_METRIC_TARGET = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _plain_base_url(url: AnyHttpUrl) -> AnyHttpUrl:
    # the gateway appends the request's path to a base URL: a query or fragment in it would
    # end up in the middle of every forwarded URL
    if url.query is not None:
        raise ValueError(
            f"a base URL takes no query (?{url.query}): the gateway appends each request's path"
        )
    if url.fragment is not None:
        raise ValueError(f"a base URL takes no fragment (#{url.fragment})")
    return url


BaseUrl = Annotated[AnyHttpUrl, AfterValidator(_plain_base_url)]


class VersionConfig(Strict):
    """One deployed version of a model: a name and the base URL of its server."""

    name: Name
    url: BaseUrl
    # where the controller reads this version's CPU and memory during rollouts (one of them)
    metrics_url: AnyHttpUrl | None = Field(
        default=None, description="its Prometheus endpoint (process_cpu_seconds_total, ...)"
    )
    pid_file: str | None = Field(default=None, description="a file holding its local PID")

    @model_validator(mode="after")
    def _one_resource_source(self) -> VersionConfig:
        if self.metrics_url is not None and self.pid_file is not None:
            raise ValueError("give metrics_url or pid_file, not both")
        return self

    @property
    def base_url(self) -> str:
        return str(self.url).rstrip("/")


class StickyKey(Strict):
    """Where the sticky-assignment key comes from; exactly one source."""

    header: str | None = None
    cookie: str | None = None
    json_field: str | None = Field(
        default=None, description="dotted path into the JSON body, e.g. instances.0.user_id"
    )

    @model_validator(mode="after")
    def _one_source(self) -> StickyKey:
        given = [s for s in (self.header, self.cookie, self.json_field) if s]
        if len(given) != 1:
            raise ValueError("set exactly one of header, cookie or json_field")
        return self


class SliceField(Strict):
    """A slice attribute recorded with every logged call, from a header or a JSON field."""

    name: Name
    header: str | None = None
    json_field: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SliceField:
        if bool(self.header) == bool(self.json_field):
            raise ValueError("set exactly one of header or json_field")
        return self


def reads_json_body(sticky: StickyKey | None, slices: Iterable[SliceField]) -> bool:
    """Whether a model's requests are parsed as JSON to route and log them: its sticky key
    or one of its slices is a JSON field. The gateway and the batch ingest (reading a
    sidecar's request as the gateway would) both ask this."""
    return bool(sticky is not None and sticky.json_field) or any(f.json_field for f in slices)


def _percent_in_basis_points(value: float) -> float:
    basis_points = value * 100
    if abs(basis_points - round(basis_points)) > 1e-6:
        raise ValueError("must be a multiple of 0.01 (weights move in steps of 0.01%)")
    return value


class RoutingConfig(Strict):
    """The initial traffic split of a model; the live split is in the store."""

    stable: Name
    canary: Name | None = None
    canary_weight: Percent = 0.0
    shadow: Name | None = None
    mirror_share: Percent = 100.0
    sticky: StickyKey | None = StickyKey(header="X-User-Id")
    salt: str | None = Field(default=None, description="hash salt; defaults to the model name")

    _check_weight = field_validator("canary_weight", "mirror_share")(_percent_in_basis_points)

    @model_validator(mode="after")
    def _roles_are_distinct(self) -> RoutingConfig:
        if self.canary is not None and self.canary == self.stable:
            raise ValueError("canary must differ from stable")
        if self.shadow is not None and self.shadow == self.stable:
            raise ValueError("shadow must differ from stable")
        if self.canary is None and self.canary_weight > 0:
            raise ValueError("canary_weight > 0 needs a canary version")
        return self


class BuiltinTraffic(Strict):
    """Coalmine's own gateway routes the model (the default)."""

    provider: Literal["builtin"] = "builtin"


class NginxTraffic(Strict):
    """nginx routes the model: Coalmine writes `config_path` (included by `main_config`'s
    http block), checks it with `nginx -t` and reloads the master in `pid_file`."""

    provider: Literal["nginx"]
    config_path: Path
    main_config: Path
    pid_file: Path
    nginx_binary: Path = Path("/usr/sbin/nginx")
    prefix: Path | None = Field(default=None, description="nginx -p, for relative paths")


TrafficConfig = Annotated[
    BuiltinTraffic | NginxTraffic | GatewayApiTraffic | IstioTraffic | KServeTraffic,
    Field(discriminator="provider"),
]


# the field of each Kubernetes provider's settings that maps versions to what runs them
_TARGET_FIELDS = {"backends", "destinations", "storage_uris"}


class ModelConfig(Strict):
    name: Name
    task: Literal["classification", "regression"] = "classification"
    versions: list[VersionConfig] = Field(min_length=1)
    routing: RoutingConfig
    slices: list[SliceField] = Field(default_factory=list)
    traffic: TrafficConfig = BuiltinTraffic()
    scores: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="the response field (V1, plain JSON) or V2 output holding the scores "
        "(class probabilities) that log_loss and auc need; default: found by its usual names",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_version_needs_no_routing(cls, data: Any) -> Any:
        # with a single version there is nothing to choose: it is the stable one
        if isinstance(data, dict) and "routing" not in data:
            versions = data.get("versions")
            if isinstance(versions, list) and len(versions) == 1:
                only = versions[0]
                name = only.get("name") if isinstance(only, dict) else getattr(only, "name", None)
                if isinstance(name, str):
                    return {**data, "routing": {"stable": name}}
        return data

    @model_validator(mode="after")
    def _routing_names_known_versions(self) -> ModelConfig:
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate version names in {names}")
        for role in ("stable", "canary", "shadow"):
            version = getattr(self.routing, role)
            if version is not None and version not in names:
                raise ValueError(f"routing.{role} {version!r} is not one of the versions {names}")
        sticky = self.routing.sticky
        if self.traffic.provider == "nginx" and sticky is not None and sticky.json_field:
            raise ValueError(
                "routing.sticky.json_field: nginx (traffic.provider) cannot read a JSON body "
                "field as the sticky key; use a header or a cookie"
            )
        if isinstance(self.traffic, KubernetesTraffic):
            targets = self.traffic.version_targets()
            field = next(iter(type(self.traffic).model_fields.keys() & _TARGET_FIELDS))
            if missing := [n for n in names if n not in targets]:
                raise ValueError(f"traffic.{field}: no entry for version(s) {missing}")
            if unknown := sorted(set(targets) - set(names)):
                raise ValueError(f"traffic.{field}: {unknown} are not versions of this model")
        return self

    def version(self, name: str) -> VersionConfig:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(name)


class ShadowConfig(Strict):
    """The mirror: a bounded queue with its own workers, so the shadow never slows production."""

    queue_size: int = Field(default=2048, ge=1)
    workers: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)
    max_age_s: float = Field(
        default=1.0,
        gt=0,
        description="a copy still queued this long after its request is dropped (counted)",
    )
    strip_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Cookie", "X-Api-Key"],
        description="request headers left out of mirror copies (the end user's credentials)",
    )


class GatewayConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    processes: int = Field(default=1, ge=0, description="0 = one per CPU core (SO_REUSEPORT)")
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    upstream_timeout_s: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(
        default=64 << 20,
        ge=1,
        description="a model server's answer, decoded, past this is refused (error too_large)",
    )
    canary_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="a canary call still unanswered after this long is a failure (counted by "
        "the fast guard; the user is answered by stable when canary_failover is on)",
    )
    # connection hygiene: a client that holds a socket without finishing a request is cut off
    header_timeout_s: float = Field(default=10.0, gt=0, description="to send a request's head")
    body_timeout_s: float = Field(default=30.0, gt=0, description="to send a request's body")
    keepalive_timeout_s: float = Field(
        default=15.0, gt=0, description="idle time before a kept-alive connection is closed"
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        description="open client connections per gateway process; further ones get a 503 at "
        "once. Also capped by the file-descriptor limit, so the process keeps descriptors "
        "for its store, upstreams and (in `coalmine serve`) the control plane",
    )
    server: Literal["protocol", "aiohttp"] = Field(
        default="protocol",
        description="the HTTP server of the data plane: protocol = an asyncio Protocol with "
        "httptools' parser and no framework on the request path (gateway/protocol_server.py); "
        "aiohttp = aiohttp's low-level server",
    )
    # httptools: the thin keep-alive client, 1.5-4x cheaper per call; aiohttp: ClientSession
    upstream_client: Literal["aiohttp", "httptools"] = "httptools"
    canary_failover: bool = True
    routing_poll_s: float = Field(default=0.5, gt=0, le=1.0)
    fast_guard_failures: int = Field(
        default=5, ge=0, description="consecutive canary failures that route away; 0 = off"
    )
    shadow: ShadowConfig = ShadowConfig()
    metrics_dir: str | None = Field(
        default=None,
        description="with several processes, where each writes its metrics for /metrics to "
        "merge (emptied at start); default: a temporary directory removed at exit",
    )
    feedback_token: str | None = Field(
        default=None,
        min_length=16,
        description="when set (or $COALMINE_FEEDBACK_TOKEN), POST /v1/feedback needs "
        "Authorization: Bearer <token>; without one anyone who reaches the data plane may label",
    )

    def resolved_feedback_token(self) -> str | None:
        return self.feedback_token or os.environ.get("COALMINE_FEEDBACK_TOKEN") or None


class LoggingConfig(Strict):
    """What the prediction log keeps and how it is written."""

    inputs: Literal["full", "redacted", "hashed", "none"] = "full"
    redact_fields: list[str] = Field(default_factory=list)
    max_input_bytes: int = Field(default=4096, ge=0)
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.25, gt=0)
    buffer_size: int = Field(default=100_000, ge=1)
    stable_sample_rate: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="share of stable calls logged while no rollout runs on the model (each "
        "kept row stores its weight 1/rate); canary, shadow, baseline and paired calls, and "
        "every call during a rollout, are logged in full",
    )
    stable_sample_rate_during_rollouts: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="share of stable calls logged while a canary step of a rollout routes "
        "part of the model's traffic elsewhere (each kept row stores its weight 1/rate, and "
        "the analysis's count tests condition on the share of logged rows); fewer "
        "production samples mean slower verdicts, never biased ones. During a shadow step "
        "(0% canary) stable calls are the shadow's pairs and are logged in full",
    )
    writer: Literal["process", "thread"] = Field(
        default="process",
        description="who encodes and writes the rows: a child process fed through a pipe "
        "(cheaper per request, benchmarks/gateway.py) or a thread of the gateway's process",
    )


def hide_password(url: str) -> str:
    """`url` with the password of its userinfo replaced by ***, for printing and logging."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class KServeService(Strict):
    """Which model, and in which role, an InferenceService's logged calls are."""

    service: str = Field(min_length=1, max_length=253, description="InferenceService name")
    namespace: str | None = Field(default=None, description="None: any namespace")
    model: Name
    role: Literal["shadow", "baseline"] | None = Field(
        default=None,
        description="None: stable for KServe's default endpoint, canary for its canary "
        "endpoint; shadow: a mirrored InferenceService answering the route's shadow",
    )


class KServeCollectorConfig(Strict):
    """The KServe inference logger collector (`POST /collect/kserve/<secret>`)."""

    secret: str | None = Field(
        default=None,
        min_length=16,
        description="the URL path secret KServe's logger posts to (it sends no token); "
        "defaults to $COALMINE_KSERVE_SECRET; unset: the collector is off",
    )
    services: list[KServeService] = Field(
        default_factory=list,
        description="InferenceService -> model; one not listed is the model of its name",
    )
    request_id_header: str | None = Field(
        default="X-Request-Id",
        description="a header the logger's metadataHeaders forwards, logged as the request "
        "id when present (else the event's ce-id)",
    )
    pair_timeout_s: float = Field(default=30.0, gt=0)
    max_pending: int = Field(default=10_000, ge=1)
    unanswered: Literal["error", "drop"] = Field(
        default="error",
        description="a request whose response never came (KServe logs only 200 answers): "
        "logged as a call without an answer (error), or dropped",
    )

    def resolved_secret(self) -> str | None:
        return self.secret or os.environ.get("COALMINE_KSERVE_SECRET") or None


class NginxLogConfig(Strict):
    """nginx's access log (coalmine.collect.nginx_log's JSON format) as a latency/status
    source: a file followed across rotation and/or a loopback syslog UDP listener."""

    file: Path | None = Field(default=None, description="the access_log file to follow")
    from_start: bool = Field(default=False, description="read the file's existing lines too")
    syslog: str | None = Field(
        default=None,
        pattern=r"^(127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}$",
        description="loopback host:port for `access_log syslog:server=...`",
    )


class CollectConfig(Strict):
    """Predictions collected where Coalmine is not the proxy (coalmine/collect/)."""

    kserve: KServeCollectorConfig = KServeCollectorConfig()
    nginx_log: NginxLogConfig = NginxLogConfig()


def _store_url_default() -> str:
    # a deployment keeps the database password in a secret, not in the config file
    return os.environ.get("COALMINE_STORE_URL") or "sqlite:///coalmine.db"


class StoreConfig(Strict):
    url: str = Field(
        default_factory=_store_url_default,
        validate_default=True,  # a URL from the environment is checked like one in the file
        description="SQLAlchemy URL; when the file sets none, $COALMINE_STORE_URL, else "
        "sqlite:///coalmine.db",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="prediction-log rows (and feedback) older than this are removed by the "
        "controller, never those an active rollout reads; None keeps everything",
    )

    @field_validator("url")
    @classmethod
    def _looks_like_sqlalchemy_url(cls, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9+]*://", value):
            raise ValueError("must be an SQLAlchemy URL such as sqlite:///coalmine.db")
        return value


class ApiConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8900, ge=0, le=65535)
    token: str | None = Field(default=None, description="bearer token; defaults to $COALMINE_TOKEN")
    judge_token: str | None = Field(
        default=None,
        description="a second, read-only bearer token for the judge endpoints only (Argo "
        "Rollouts, Flagger: /api/v1/judge); defaults to $COALMINE_JUDGE_TOKEN",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1, description="larger bodies get 413")
    tls_cert_file: str | None = Field(
        default=None, description="PEM certificate (chain): the API serves HTTPS; with key"
    )
    tls_key_file: str | None = Field(default=None, description="PEM private key of the cert")

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        return self

    def resolved_token(self) -> str | None:
        return self.token or os.environ.get("COALMINE_TOKEN")

    def resolved_judge_token(self) -> str | None:
        return self.judge_token or os.environ.get("COALMINE_JUDGE_TOKEN")


class PrometheusSource(Strict):
    """A Prometheus server whose data PromQL criteria may query (`source: NAME` in a spec)."""

    type: Literal["prometheus"]
    url: BaseUrl = Field(description="its base URL, e.g. http://prometheus:9090")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    queries: dict[str, str] = Field(
        default_factory=dict,
        description="default PromQL templates by metric (cpu, memory, or names of your own) "
        "for criteria that give no query; cpu and memory have built-in ones",
    )


MetricSource = Annotated[PrometheusSource, Field(discriminator="type")]


class ControllerConfig(Strict):
    """The rollout controllers' leader lease (README: High availability)."""

    lease_ttl_s: float = Field(
        default=3.0, gt=0, le=600, description="a dead leader's successor takes over after this"
    )
    lease_renew_s: float = Field(default=1.0, gt=0, description="the leader renews this often")

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> ControllerConfig:
        if self.lease_renew_s > self.lease_ttl_s / 2:
            raise ValueError("lease_renew_s must be at most half of lease_ttl_s")
        return self


class CoalmineConfig(Strict):
    gateway: GatewayConfig = GatewayConfig()
    logging: LoggingConfig = LoggingConfig()
    store: StoreConfig = Field(default_factory=StoreConfig)  # reads the environment
    api: ApiConfig = ApiConfig()
    collect: CollectConfig = CollectConfig()
    controller: ControllerConfig = ControllerConfig()
    models: list[ModelConfig] = Field(min_length=1)
    metric_sources: dict[Name, MetricSource] = Field(
        default_factory=dict,
        description="name -> a metric source (type: prometheus) that criteria may name with "
        "`source:`; only these hosts are ever queried",
    )
    user_metrics: dict[Name, Annotated[str, Field(pattern=USER_METRIC_TARGET)]] = Field(
        default_factory=dict,
        description="the allow-list of per-example metrics criteria may name as user:<name>: "
        "name -> module.path:function, imported at start (never chosen by a spec)",
    )

    @model_validator(mode="after")
    def _unique_model_names(self) -> CoalmineConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in {names}")
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def summary(self) -> str:
        versions = sum(len(m.versions) for m in self.models)
        return (
            f"{len(self.models)} model(s), {versions} version(s); gateway "
            f"{self.gateway.host}:{self.gateway.port}; store {hide_password(self.store.url)}"
        )


class ConfigError(Exception):
    """An invalid configuration; `errors` holds (field path, reason) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {reason}" for path, reason in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


def format_errors(error: ValidationError) -> list[tuple[str, str]]:
    out = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        out.append((path, item["msg"]))
    return out


M = TypeVar("M", bound=BaseModel)


def validate_model(model: type[M], data: Any, source: str) -> M:
    """`model` from `data`, or ConfigError with every (field path, reason)."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "expected a mapping")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last
    silently, so `canary_weight: 10` then `canary_weight: 50` would mean 50 unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = first_line.get(key)
            except TypeError:  # an unhashable (complex) key: construct_mapping rejects it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} at line {line} (first given at line {first})",
                    key_node.start_mark,
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of a file; unreadable files, bad YAML and a key given twice in one
    mapping are ConfigErrors."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", exc.strerror or str(exc))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [("(yaml)", str(exc))]) from None
    except RecursionError:  # `a: [[[[...`: deeper than the parser's stack (tests/fuzz)
        raise ConfigError(str(path), [("(yaml)", "nested too deeply to read")]) from None


def parse_config(data: Any, source: str = "<config>") -> CoalmineConfig:
    return validate_model(CoalmineConfig, data, source)


def load_config(path: str | Path) -> CoalmineConfig:
    return parse_config(read_yaml(path), str(path))

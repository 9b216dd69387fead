"""PromQL criteria: a query per version, templated safely, against a configured Prometheus.

A criterion with `source:` names a Prometheus configured by the operator
(`metric_sources:` in the config file); nothing in a spec chooses a host. Its `query` is a
PromQL template (or, for `cpu` and `memory`, the source's query for that metric) with these
variables, in the manner of Argo Rollouts' `{{args.*}}` and Flagger's `{{ target }}`,
`{{ interval }}`:

    {{model}}      the model's name
    {{version}}    the version being measured: the candidate, then the stable version
    {{candidate}}  the candidate version       {{stable}}  the stable (baseline) version
    {{window}}     the criterion's window as a PromQL duration ("30s"), for rate()[...];
                   {{interval}} is the same, as Flagger's templates spell it
    {{rollout}}    the rollout's id

Substitution is plain text replacement, not a template engine: nothing else in `{{ }}` is
accepted. The names (model, versions) may only appear inside a quoted PromQL string ("..."
or '...', not a raw `...` string) and are escaped for it, so a value can never end the
string and add PromQL of its own; {{window}} and {{rollout}} are numbers we format.

Pure: the queries are sent by `analysis/sources/promql.py`, judged by `guard_rail.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_QUERIES",
    "PromQLCriterion",
    "TemplateError",
    "check_template",
    "install_sources",
    "installed_sources",
    "promql_duration",
    "render",
]

# The queries `cpu` and `memory` run when the criterion gives none and the source's config
# sets none: the version's model-server targets must carry `model` and `version` labels
# (e.g. relabelled from pod labels). CPU is per request served (from the gateway's own
# counter), so a 5% canary compares with production's 95%; memory is the peak resident
# memory of the version's busiest instance in the window.
DEFAULT_QUERIES = {
    "cpu": (
        '1000 * sum(rate(process_cpu_seconds_total{model="{{model}}",version="{{version}}"}'
        "[{{window}}])) / "
        'sum(rate(coalmine_gateway_requests_total{model="{{model}}",version="{{version}}"}'
        "[{{window}}]))"
    ),
    "memory": (
        'max(max_over_time(process_resident_memory_bytes{model="{{model}}",'
        'version="{{version}}"}[{{window}}])) / 1048576'
    ),
}
UNITS = {"cpu": "ms CPU per request", "memory": "MB"}

NAMES = frozenset({"model", "version", "candidate", "stable"})
NUMBERS = frozenset({"window", "interval", "rollout"})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,62}$")


class TemplateError(ValueError):
    pass


def _string_context(template: str, position: int) -> str | None:
    """The quote character of the PromQL string `position` is inside, or None."""
    quote: str | None = None
    i = 0
    while i < position:
        ch = template[i]
        if quote is None:
            if ch in "\"'`":
                quote = ch
        elif ch == "\\" and quote != "`":
            i += 1  # an escaped character, whatever it is
        elif ch == quote:
            quote = None
        i += 1
    return quote


def check_template(template: str) -> None:
    """Raise TemplateError unless every `{{...}}` is a known variable in an allowed place."""
    if not template.strip():
        raise TemplateError("the query is empty")
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in NAMES | NUMBERS:
            known = ", ".join("{{" + n + "}}" for n in sorted(NAMES | NUMBERS))
            raise TemplateError(f"unknown template variable {{{{{name}}}}}; known: {known}")
        quote = _string_context(template, match.start())
        if name in NAMES and quote not in ('"', "'"):
            raise TemplateError(
                f"{{{{{name}}}}} must be inside a quoted PromQL string, e.g. "
                f'version="{{{{{name}}}}}" (it is escaped for one; a raw `...` string '
                "cannot be escaped)"
            )
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise TemplateError("a '{{' or '}}' that is not a template variable")


def _escape(value: str, quote: str) -> str:
    out = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return out.replace("\n", "\\n").replace("\r", "\\r")


def promql_duration(seconds: float) -> str:
    """A PromQL duration for a window: whole milliseconds, e.g. "30s", "1500ms"."""
    ms = max(round(seconds * 1000), 1)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render(template: str, variables: Mapping[str, Any]) -> str:
    """The query with each variable substituted (names escaped for their string)."""
    check_template(template)
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        parts.append(template[last : match.start()])
        if name in NAMES:
            quote = _string_context(template, match.start())
            parts.append(_escape(str(variables[name]), quote or '"'))
        elif name in ("window", "interval"):
            parts.append(promql_duration(float(variables["window"])))
        else:
            parts.append(str(int(variables[name])))
        last = match.end()
    parts.append(template[last:])
    return "".join(parts)


# name -> its default queries by metric (cpu, memory): set from the config file at start
_sources: dict[str, dict[str, str]] = {}


def install_sources(sources: Mapping[str, Mapping[str, str]]) -> None:
    """Make `sources` (name -> its queries by metric, from the config file) the configured
    Prometheus sources that criteria may name. Every query is checked now."""
    global _sources
    checked: dict[str, dict[str, str]] = {}
    for name, queries in sources.items():
        merged = {**DEFAULT_QUERIES, **queries}
        for metric, query in merged.items():
            try:
                check_template(query)
            except TemplateError as exc:
                raise TemplateError(f"{name}.queries.{metric}: {exc}") from None
        checked[name] = merged
    _sources = checked


def installed_sources() -> dict[str, dict[str, str]]:
    return dict(_sources)


def _seconds(text: str) -> float:
    """ "30s", "5m", "1h", "500ms" or a number of seconds (as rollout durations are written)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise ValueError("window: seconds or a string like '30s', '5m'")
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * unit


class PromQLCriterion(BaseModel):
    """A guard rail on a PromQL aggregate (see guard_rail.py for how it is judged).

    Thresholds: `max` / `min` on the candidate's own value; `max_ratio` on candidate ÷
    stable, the same query for both versions at the same moment. Only `must: not_fail`:
    an aggregate never PASSes, it holds a step or rolls it back.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="cpu, memory, or a name of your own (with a query)")
    name: str = ""
    source: str = Field(description="a Prometheus configured under metric_sources")
    query: str | None = Field(default=None, description="PromQL template; default: the source's")
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = Field(default=None, gt=0)
    window: float = Field(default=30.0, ge=1.0, le=86400.0, description="seconds a window")
    failures: int = Field(
        default=2, ge=1, le=100, description="consecutive breaching windows that FAIL"
    )
    must: Literal["not_fail"] | None = None
    critical: bool = False

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("window"), str):
            data["window"] = _seconds(data["window"])
        if not data.get("name") and isinstance(data.get("metric"), str):
            data["name"] = data["metric"]
        if data.get("metric") in DEFAULT_QUERIES and all(
            data.get(k) is None for k in ("max", "min", "max_ratio")
        ):
            data["max_ratio"] = 1.25  # as the `cpu`/`memory` criteria read from processes
        if data.get("must") == "pass":
            raise ValueError(
                "must: pass is not possible for a PromQL criterion: an aggregate is a guard "
                "rail that never PASSes by itself (it holds a step or rolls it back); use "
                "must: not_fail"
            )
        return data

    @model_validator(mode="after")
    def _coherent(self) -> PromQLCriterion:
        if not _METRIC_NAME.match(self.metric):
            raise ValueError(f"metric {self.metric!r}: letters, digits and _.:- only")
        if self.max is None and self.min is None and self.max_ratio is None:
            raise ValueError(
                f"{self.metric} needs a threshold: max / min (the candidate's own value) or "
                "max_ratio (candidate ÷ stable)"
            )
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        if self.source not in _sources:
            known = ", ".join(sorted(_sources)) or "none configured"
            raise ValueError(
                f"source {self.source!r} is not a configured metric source (metric_sources "
                f"in the config file; known: {known})"
            )
        if self.query is None and self.metric not in _sources[self.source]:
            raise ValueError(
                f"{self.metric} needs a query: only {', '.join(sorted(_sources[self.source]))} "
                "have default queries"
            )
        if self.query is not None:
            try:
                check_template(self.query)
            except TemplateError as exc:
                raise ValueError(f"query: {exc}") from None
        return self

    def template(self) -> str:
        return self.query if self.query is not None else _sources[self.source][self.metric]

    @property
    def unit(self) -> str:
        return UNITS.get(self.metric, "")

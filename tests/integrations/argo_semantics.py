"""What Argo Rollouts does with a web metric's answer, for the expressions our examples use.

Read from argo-rollouts (commit 9f8d111d, 2026-08): metricproviders/webmetric/webmetric.go
(`Run`, `parseResponse`: non-2xx -> Error; `jsonPath` through client-go's jsonpath, the
first result taken; nothing found -> Error), utils/evaluate/evaluate.go (`EvaluateResult`:
success and failure conditions evaluated with expr-lang on `result`; failure wins; neither
-> Inconclusive) and analysis/analysis.go (`assessMetricStatus`,
`assessMetricFailureInconclusiveOrError`: failed > failureLimit -> Failed, inconclusive >
inconclusiveLimit -> Inconclusive, consecutive errors > consecutiveErrorLimit (default 4)
-> Error, consecutiveSuccessLimit reached -> Successful, count reached -> per the limits).

Only the subset our templates use is implemented, and anything else raises, so a template
that drifts from it fails its test rather than being misread:
JSONPath `{$.a.b}`, `{.a.b}`, `{$.a['b-c']}`; expressions `result` or `result.field`
compared (==, !=, <, <=, >, >=) with a string, number or bool literal, joined by && and ||.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MetricRun", "evaluate_result", "json_path", "measure"]

_MISSING = object()


def json_path(template: str, data: Any) -> Any:
    """client-go jsonpath for a single field path; raises LookupError when nothing is found
    (Argo: "Could not find JSONPath in body" -> measurement Error)."""
    m = re.fullmatch(r"\{\$?(.*)\}", template.strip())
    if not m:
        raise ValueError(f"unsupported JSONPath template {template!r}")
    path = m.group(1)
    value = data
    for dotted, quoted in re.findall(r"\.([A-Za-z0-9_]+)|\['([^']+)'\]", path):
        key = dotted or quoted
        if not isinstance(value, dict) or key not in value:
            raise LookupError(f"{key} is not found")
        value = value[key]
    if re.sub(r"\.([A-Za-z0-9_]+)|\['([^']+)'\]", "", path):
        raise ValueError(f"unsupported JSONPath {template!r}")
    return value


_TOKEN = re.compile(
    r'\s*(?:(&&|\|\||==|!=|<=|>=|<|>)|"([^"]*)"|(-?\d+(?:\.\d+)?)|([A-Za-z_][\w.]*))'
)


def _condition(expr: str, result: Any) -> bool:
    """An expr-lang condition of the supported subset, on `result`."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise ValueError(f"unsupported expression {expr!r} at {expr[pos:]!r}")
        op, string, number, name = m.groups()
        if op:
            tokens.append(("op", op))
        elif string is not None:
            tokens.append(("lit", string))
        elif number is not None:
            tokens.append(("lit", float(number)))
        elif name in ("true", "false"):
            tokens.append(("lit", name == "true"))
        elif name == "result" or name.startswith("result."):
            value = result
            for part in name.split(".")[1:]:
                if not isinstance(value, dict) or part not in value:
                    # expr-lang: a missing map key is nil, and nil compares unequal
                    value = None
                    break
                value = value[part]
            tokens.append(("lit", value))
        else:
            raise ValueError(f"unsupported name {name!r} in {expr!r}")
        pos = m.end()
    # operand op operand (&&|| operand op operand)*: && binds tighter than ||
    compare = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b,
               "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
               ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}  # fmt: skip
    ors: list[list[bool]] = [[]]
    i = 0
    while i < len(tokens):
        (ka, a), (ko, o), (kb, b) = tokens[i : i + 3]
        if ka != "lit" or ko != "op" or o not in compare or kb != "lit":
            raise ValueError(f"unsupported expression {expr!r}")
        ors[-1].append(bool(compare[o](a, b)))
        i += 3
        if i < len(tokens):
            kind, joiner = tokens[i]
            if kind != "op" or joiner not in ("&&", "||"):
                raise ValueError(f"unsupported expression {expr!r}")
            if joiner == "||":
                ors.append([])
            i += 1
    return any(all(group) for group in ors)


def evaluate_result(result: Any, success: str, failure: str) -> str:
    """EvaluateResult: "Successful", "Failed" or "Inconclusive"."""
    ok = _condition(success, result) if success else False
    bad = _condition(failure, result) if failure else False
    if success and not failure:
        bad = not ok
    if failure and not success:
        ok = not bad
    if bad:
        return "Failed"
    if not ok:
        return "Inconclusive"
    return "Successful"


def measure(metric: dict[str, Any], status: int, body: Any) -> str:
    """One measurement of a web metric: its phase from the HTTP status and JSON body."""
    if not 200 <= status < 300:
        return "Error"
    web = metric["provider"]["web"]
    try:
        value = json_path(web.get("jsonPath", "{$}"), body)
    except LookupError:
        return "Error"
    return evaluate_result(
        value, metric.get("successCondition", ""), metric.get("failureCondition", "")
    )


@dataclass
class MetricRun:
    """A metric's measurements so far and the metric's phase (assessMetricStatus)."""

    metric: dict[str, Any]
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    consecutive_success: int = 0
    count: int = 0

    def add(self, phase: str) -> str:
        self.count += 1
        if phase == "Error":
            self.errors += 1
            self.consecutive_errors += 1
        else:
            self.consecutive_errors = 0
        self.successful += phase == "Successful"
        self.failed += phase == "Failed"
        self.inconclusive += phase == "Inconclusive"
        self.consecutive_success = self.consecutive_success + 1 if phase == "Successful" else 0
        return self.phase()

    def phase(self) -> str:
        m = self.metric
        # assessMetricFailureInconclusiveOrError: each check overwrites the one before
        phase = ""
        failure_limit = int(m.get("failureLimit", 0))
        if failure_limit >= 0 and self.failed > failure_limit:
            phase = "Failed"
        if self.inconclusive > int(m.get("inconclusiveLimit", 0)):
            phase = "Inconclusive"
        if self.consecutive_errors > int(m.get("consecutiveErrorLimit", 4)):
            phase = "Error"
        if phase:
            return phase
        limit = int(m.get("consecutiveSuccessLimit", 0))
        if limit > 0 and self.consecutive_success >= limit:
            return "Successful"
        count = m.get("count")
        if count is not None and self.count >= int(count):
            failure_applicable = failure_limit >= 0
            if failure_applicable and limit > 0:
                return "Inconclusive"
            return "Failed" if limit > 0 else "Successful"
        return "Running"

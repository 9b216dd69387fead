"""PromQL criteria, pure parts: templates substituted safely, the spec's validation, and the
guard-rail rule (thresholds over windows, FAIL after k consecutive breaches, never PASS)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from coalmine.analysis.guard_rail import GuardRail, Window
from coalmine.analysis.promql import (
    DEFAULT_QUERIES,
    PromQLCriterion,
    TemplateError,
    check_template,
    install_sources,
    installed_sources,
    render,
)
from coalmine.analysis.sequential import Verdict
from coalmine.config import ConfigError
from coalmine.rollout.judge import build_criteria, build_guard_rails
from coalmine.rollout.spec import parse_spec

VARS = {"model": "iris", "version": "v2", "candidate": "v2", "stable": "v1", "window": 30,
        "rollout": 7}  # fmt: skip


@pytest.fixture(autouse=True)
def sources() -> Iterator[None]:
    before = installed_sources()
    install_sources({"prom": {}})
    yield
    install_sources(before)


def test_variables_are_substituted() -> None:
    q = 'sum(rate(x{model="{{model}}",version="{{ version }}"}[{{window}}])) + {{rollout}}'
    assert render(q, VARS) == 'sum(rate(x{model="iris",version="v2"}[30s])) + 7'
    assert render("max(y{v='{{stable}}'})", VARS) == "max(y{v='v1'})"
    assert "[1500ms]" in render("rate(x[{{window}}])", {**VARS, "window": 1.5})
    assert render("rate(x[{{ interval }}])", VARS) == "rate(x[30s])"  # Flagger's spelling


def test_a_value_cannot_leave_its_string() -> None:
    evil = {**VARS, "version": 'v2"} or vector(1) or x{a="'}
    out = render('sum(x{version="{{version}}"})', evil)
    assert out == 'sum(x{version="v2\\"} or vector(1) or x{a=\\""})'
    assert render("x{v='{{version}}'}", {**VARS, "version": "a'b\\"}) == "x{v='a\\'b\\\\'}"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("sum(x{version={{version}}})", "inside a quoted PromQL string"),
        ("sum(x{version=`{{version}}`})", "inside a quoted PromQL string"),
        ('sum(x{v="{{__import__}}"})', "unknown template variable"),
        ('sum(x{v="{{version | upper}}"})', "not a template variable"),
        ("{% for x in y %}", ""),
        ("   ", "empty"),
    ],
)
def test_templates_that_are_refused(template: str, reason: str) -> None:
    if not reason:  # not a template construct: plain (invalid) PromQL, left to Prometheus
        check_template(template)
        return
    with pytest.raises(TemplateError, match=reason):
        check_template(template)


def test_the_builtin_queries_are_valid_templates() -> None:
    for query in DEFAULT_QUERIES.values():
        check_template(query)


def _spec(criterion: dict[str, object]) -> dict[str, object]:
    return {"canary": {"criteria": [{"metric": "error_rate"}, criterion]}}


def test_a_spec_names_a_configured_source_and_nothing_else() -> None:
    spec = parse_spec(_spec({"metric": "cpu", "source": "prom", "window": "5s"}))
    [rail] = build_guard_rails(spec, "canary")
    assert (rail.max_ratio, rail.window, rail.failures) == (1.25, 5.0, 2)
    # the engine's criteria leave the PromQL one to the guard rails
    assert [c.metric for c in build_criteria(spec, "canary")] == ["error_rate"]
    bad = [
        ({"metric": "cpu", "source": "http://evil:9090"}, "not a configured metric source"),
        ({"metric": "cpu", "source": "prom", "url": "http://evil"}, "url"),
        ({"metric": "cpu", "source": "prom", "must": "pass"}, "must: pass is not possible"),
        ({"metric": "qps", "source": "prom", "max": 3}, "needs a query"),
        ({"metric": "qps", "source": "prom", "query": "up"}, "needs a threshold"),
        ({"metric": "x", "source": "prom", "max": 1, "query": "a{v={{version}}}"}, "quoted"),
    ]
    for criterion, reason in bad:
        with pytest.raises(ConfigError) as err:
            build_criteria(parse_spec(_spec(criterion)), "canary")
        [(path, why)] = err.value.errors
        assert path.startswith("canary.criteria.1"), (path, why)
        assert reason in why or reason in path, why


def _rail(**fields: object) -> GuardRail:
    criterion = PromQLCriterion.model_validate({"metric": "cpu", "source": "prom", **fields})
    return GuardRail(criterion, opened_at=0.0)


def test_k_consecutive_breaches_fail_and_a_good_window_resets_the_run() -> None:
    rail = _rail(max_ratio=1.5, failures=3, window=10)
    assert not rail.due(9.9) and rail.due(10)
    assert rail.status() == "no_data"  # no window yet: it holds
    statuses = []
    for t, c in enumerate([2.0, 2.0, 1.0, 2.0, 2.0, 2.0], start=1):
        rail.observe(10.0 * t, Window(candidate=c, stable=1.0))
        statuses.append(rail.status())
    assert statuses == ["breaching", "breaching", "ok", "breaching", "breaching", "fail"]
    result = rail.result()
    assert result.verdict == Verdict.FAIL
    assert (result.estimate, result.threshold, result.n_candidate) == (2.0, 1.5, 6)
    assert "breached in 3 consecutive windows" in result.sentence


def test_it_never_passes_and_holds_nothing_back_when_fine() -> None:
    rail = _rail(max=100.0)
    for t in range(1, 50):
        rail.observe(30.0 * t, Window(candidate=50.0, stable=None))
        assert rail.status() == "ok"
        assert rail.result().verdict == Verdict.INCONCLUSIVE


def test_no_data_holds_and_neither_breaks_nor_extends_a_run() -> None:
    rail = _rail(max_ratio=1.2, failures=2)
    rail.observe(30, Window(2.0, 1.0))
    rail.observe(60, Window(None, 1.0))  # an empty vector for the candidate
    assert rail.status() == "no_data"
    rail.observe(90, Window(math.nan, 1.0))  # e.g. 0/0: no requests in the window
    assert rail.status() == "no_data"
    rail.observe(150, Window(1.3, 1.0, None))
    assert rail.status() == "fail"  # two breaching windows with data, in a row
    fresh = _rail(max_ratio=1.2)
    fresh.observe(30, Window(1.0, None))  # a ratio needs the stable version's value too
    assert fresh.status() == "no_data"
    fresh.observe(60, Window(1.0, 1.0))
    fresh.observe(90, Window(1.0, math.nan))  # at 100% stable serves nothing: its latest
    assert fresh.status() == "ok" and fresh.result().baseline_value == 1.0
    failed = _rail(max=1.0)
    failed.observe(30, Window(None, None, "cannot reach the Prometheus server: URLError"))
    assert "cannot reach" in failed.result().sentence


def test_a_zero_stable_value_is_a_ratio_breach_only_when_the_candidate_is_above_it() -> None:
    rail = _rail(max_ratio=1.25, failures=1)
    rail.observe(30, Window(0.0, 0.0))
    assert rail.status() == "ok"
    rail.observe(60, Window(0.1, 0.0))
    assert rail.status() == "fail"


def test_the_judge_only_endpoints_refuse_promql_criteria_instead_of_dropping_them() -> None:
    from sqlalchemy import create_engine

    from coalmine.integrations.query import make_query
    from coalmine.integrations.service import JudgeService

    service = JudgeService(create_engine("sqlite://"), models=lambda: {"iris"})
    spec = _spec({"metric": "cpu", "source": "prom"})
    query = make_query(model="iris", candidate="v2", baseline="v1", spec=spec, where="metadata.")
    with pytest.raises(ConfigError) as err:
        service.criteria(query)
    [(path, why)] = err.value.errors
    assert path == "metadata.spec.canary.criteria.1" and "Prometheus provider" in why

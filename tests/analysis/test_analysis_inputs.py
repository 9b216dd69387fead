"""Inputs that used to mean something else without a word (issue 9): each is now read by
one rule (coalmine.analysis.inputs) or refused with the field and the reason."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from coalmine.analysis import Analysis, Criterion, Verdict
from coalmine.analysis.metrics import Obs
from coalmine.cli import app

N = 4000


def _error_judgement(cand: Any, base: Any, **kw: Any) -> Any:
    a = Analysis([Criterion(metric="error_rate", margin=0.005)], max_slices=0)
    a.add_batch("candidate", errors=cand, **kw)
    a.add_batch("baseline", errors=base, **kw)
    return a.judge().results[0]


def _flags(rate: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(N) < rate


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda f: f, id="numpy-bool-array"),
        pytest.param(lambda f: f.astype(int).tolist(), id="0-1-integers"),
        pytest.param(lambda f: f.astype(np.int64), id="numpy-int64"),
        pytest.param(lambda f: np.where(f, 503, 200).tolist(), id="status-codes"),
        pytest.param(lambda f: np.where(f, "http_503", None).tolist(), id="class-http_503"),
        pytest.param(lambda f: [bool(x) for x in f], id="python-bools"),
    ],
)
def test_errors_in_every_documented_form_count_as_errors(encode: Any) -> None:
    r = _error_judgement(encode(_flags(0.10, 1)), encode(_flags(0.01, 2)))
    assert r.verdict is Verdict.FAIL, r.sentence  # 10% vs 1%: not "no errors"
    assert r.candidate_value == pytest.approx(0.10, abs=0.015)


@pytest.mark.parametrize(
    ("errors", "match"),
    [
        (["error", None], r"errors\[0\]: 'error' is not an error class"),
        ([0.3, 0.0], r"errors\[0\]: 0.3 \(float\) is not an error"),
        ([0, 1, 503], r"errors\[0\]: 0 is neither a 0/1 flag nor an HTTP status code"),
        ("http_5xx", "errors: give one entry per request"),
    ],
)
def test_errors_that_cannot_be_read_are_refused_naming_the_entry(errors: Any, match: str) -> None:
    a = Analysis(max_slices=0)
    with pytest.raises(ValueError, match=match):
        a.add_batch("candidate", errors=errors)


def test_status_codes_and_error_classes_agree() -> None:
    a = Analysis([Criterion(metric="error_rate", margin=0.01)], max_slices=0)
    a.add_batch("candidate", errors=["http_507", "timeout", None, "http_4xx"], status=None)
    s = a.stats.slices[""].candidate
    assert s.pooled("error").total == 2  # 507 and the timeout; a 4xx is the client's
    assert s.error_classes["http_507"] == 1 and s.error_classes["timeout"] == 1
    with pytest.raises(ValueError, match=r"status\[0\]: must be an HTTP status code"):
        a.add_batch("candidate", status=[700])


def test_class_names_against_class_indices_are_refused_or_mapped_by_classes() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    names = np.array(["no", "yes"])[y].tolist()
    a = Analysis([Criterion(metric="accuracy", margin=0.01)], max_slices=0)
    with pytest.raises(ValueError, match=r"labels\[0\]: '(yes|no)' cannot match.*classes="):
        a.add_batch("candidate", predictions=y.tolist(), labels=names)
    # with the mapping, a 20-point drop is seen (it PASSed at 0% vs 0% before)
    a = Analysis([Criterion(metric="accuracy", margin=0.01)], max_slices=0, classes=["no", "yes"])
    good = np.where(rng.random(3000) < 0.9, y, 1 - y)
    bad = np.where(rng.random(3000) < 0.7, y, 1 - y)
    a.add_batch("candidate", predictions=bad.tolist(), labels=names)
    a.add_batch("baseline", predictions=good.tolist(), labels=names)
    r = a.judge().results[0]
    assert r.verdict is Verdict.FAIL
    assert r.candidate_value == pytest.approx(0.7, abs=0.03)
    assert r.baseline_value == pytest.approx(0.9, abs=0.03)


def test_the_engine_path_counts_mismatched_labels_in_a_note() -> None:
    # the Evaluator feeds Obs rows from the log: it cannot refuse them, it says so
    a = Analysis([Criterion(metric="accuracy", margin=0.01)], max_slices=0)
    rows = [Obs(prediction=1, label="yes", has_label=True) for _ in range(10)]
    a.observe_requests("candidate", rows)
    a.observe_labels("candidate", rows)
    j = a.judge()
    assert j.results[0].n_candidate == 0  # not scored as 10 wrong answers
    assert any("labels: 10 labelled requests were not scored: label 'yes'" in n for n in j.notes)


def test_numpy_scalars_are_plain_numbers_everywhere() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 2000)
    a = Analysis(
        [Criterion(metric="accuracy", margin=0.05), Criterion(metric="latency_mean", margin=5)],
        max_slices=0,
        alpha=np.float64(0.05),
    )
    for arm in ("candidate", "baseline"):
        a.add_batch(
            arm,
            predictions=list(y.astype(np.int64)),  # a list of numpy int64 scalars
            labels=y,  # an int64 array
            latency_ms=list(np.full(2000, 10.0)),
            errors=list(np.zeros(2000, dtype=bool)),
            steps=np.full(2000, 500, dtype=np.int64),
        )
    j = a.judge()
    acc = j.results[0]
    assert acc.n_candidate == 2000 and acc.candidate_value == 1.0
    assert acc.verdict is Verdict.PASS
    assert not any("could not be scored" in n for n in j.notes)


def test_bad_latencies_are_counted_and_reported_not_dropped() -> None:
    a = Analysis([Criterion(metric="latency_mean", margin=5)], max_slices=0)
    a.add_batch("candidate", latency_ms=[10.0, math.nan, -3.0, math.inf, None, 12.0])
    a.add_batch("baseline", latency_ms=[10.0, -1.0])
    j = a.judge()
    note = next(n for n in j.notes if n.startswith("latency:"))
    assert "3 candidate and 1 baseline values were NaN, infinite or negative" in note
    with pytest.raises(ValueError, match=r"latency_ms\[1\]: must be a number of ms \(got '12'"):
        a.add_batch("candidate", latency_ms=[10.0, "12"])


def test_latency_units_and_the_microseconds_warning() -> None:
    rng = np.random.default_rng(11)
    crit = [Criterion(metric="latency_p95", max_ratio=1.5)]
    us_base = rng.lognormal(math.log(20_000), 0.3, 5000)  # 20 ms, in microseconds
    us_cand = 10 * rng.lognormal(math.log(20_000), 0.3, 5000)  # 10× slower
    # as if they were ms: beyond the histogram, undecidable, and now said so
    a = Analysis(crit, max_slices=0)
    a.add_batch("candidate", latency_ms=us_cand)
    a.add_batch("baseline", latency_ms=us_base)
    j = a.judge()
    assert any("latency_unit='us'" in n for n in j.notes), j.notes
    # with the unit: a 10× regression FAILs, judged in ms
    a = Analysis(crit, max_slices=0, latency_unit="us")
    a.add_batch("candidate", latency_ms=us_cand)
    a.add_batch("baseline", latency_ms=us_base / 1000, latency_unit="ms")
    r = a.judge().results[0]
    assert r.verdict is Verdict.FAIL and r.candidate_value == pytest.approx(200 * 1.64, rel=0.2)
    with pytest.raises(ValueError, match="latency_unit: must be one of ms, s, us"):
        Analysis(crit, latency_unit="sec")


def test_steps_as_fractions_are_refused_not_truncated() -> None:
    a = Analysis(max_slices=0)
    fraction = r"steps\[0\]: .*basis points.*0.05 looks like a fraction: give 500"
    with pytest.raises(ValueError, match=fraction):
        a.add_batch("candidate", errors=[None], steps=[0.05])
    with pytest.raises(ValueError, match=r"steps\[0\]: must be in 0–10,000"):
        a.add_batch("candidate", errors=[None], steps=[20_000])


def _ramp(a: Analysis, rng: np.random.Generator, *, unit: float | None) -> None:
    """A/A ramp 1% → 5% → 25% → 50% while the base error rate drifts; judged each step."""
    for share, rate in ((0.01, 0.002), (0.05, 0.004), (0.25, 0.008), (0.50, 0.016)):
        total = 20_000
        n_c = int(total * share)
        for arm, n in (("candidate", n_c), ("baseline", total - n_c)):
            errors = rng.random(n) < rate
            steps = None if unit is None else [round(share * unit)] * n
            a.add_batch(arm, errors=errors, latency_ms=np.full(n, 5.0), steps=steps)
        a.judge()


def test_a_ramp_without_steps_or_in_percent_is_refused_and_in_basis_points_judged() -> None:
    crit = [Criterion(metric="error_rate", max_ratio=1.5), Criterion(metric="error_rate",
            name="err_margin", margin=0.002)]  # fmt: skip
    with pytest.raises(ValueError, match=r"steps: the candidate's share of the rows changed"):
        _ramp(Analysis(crit, max_slices=0), np.random.default_rng(1), unit=None)
    with pytest.raises(ValueError, match=r"steps: at step 1 bp .* steps are basis points"):
        _ramp(Analysis(crit, max_slices=0), np.random.default_rng(1), unit=100)  # percent
    a = Analysis(crit, max_slices=0)
    _ramp(a, np.random.default_rng(1), unit=10_000)
    assert a.judge().verdict is not Verdict.FAIL


def test_alpha_as_a_string_is_a_clear_error() -> None:
    string = r"alpha: must be a number in \(0, 1\) \(got '0.05', a str\)"
    with pytest.raises(ValueError, match=string):
        Analysis(alpha="0.05")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_slices: must be a whole number"):
        Analysis(max_slices=2.5)  # type: ignore[arg-type]


def test_a_count_test_fail_is_shown_with_an_interval_that_excludes_the_threshold() -> None:
    crit = [Criterion(metric="error_rate", max_ratio=1.0)]
    shown = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        a = Analysis(crit, max_slices=0)
        for _ in range(30):
            for arm, n, rate in (("candidate", 250, 0.03), ("baseline", 4750, 0.01)):
                a.add_batch(arm, errors=rng.random(n) < rate, steps=[500] * n)
            r = a.judge().results[0]
            if r.verdict is Verdict.FAIL:
                assert r.lower >= r.threshold, r.sentence
                shown += 1
                break
    assert shown >= 20


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = ["request_id", "model", "version", "role", "latency_ms", "status", "error_class",
            "prediction", "canary_weight_bp", "label"]  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow({"model": "m", "canary_weight_bp": 5000, "status": 200, **r})


def _analyze(path: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["analyze", str(path), "--model", "m", "--candidate", "v2",
                                    "--baseline", "v1", *extra])  # fmt: skip


def test_coalmine_analyze_applies_the_same_rules(tmp_path: Path) -> None:
    rows = []
    for i in range(400):
        for v, role in (("v2", "canary"), ("v1", "stable")):
            rows.append({"request_id": f"r{i}-{v}", "version": v, "role": role,
                         "latency_ms": 15000 if i else -5, "prediction": json.dumps(i % 2),
                         "label": json.dumps(i % 2)})  # fmt: skip
    export = tmp_path / "log.csv"
    _csv(export, rows)
    out = _analyze(export)
    assert out.exit_code == 0, out.output
    assert "1 candidate and 1 baseline values were NaN, infinite or negative" in out.output
    out = _analyze(export, "--latency-unit", "us", "--json")
    data = json.loads(out.output)
    lat = next(r for r in data["results"] if r["metric"] == "latency_p95")
    assert lat["candidate_value"] == pytest.approx(15.0, rel=0.03)  # 15,000 µs = 15 ms
    rows[0]["label"] = json.dumps("yes")
    _csv(export, rows)
    out = _analyze(export)
    assert out.exit_code == 2
    assert "row 2: label[0]: 'yes' cannot match the predicted class 0" in out.output
    rows[0]["label"], rows[0]["error_class"] = json.dumps(0), "oops"
    _csv(export, rows)
    out = _analyze(export)
    assert out.exit_code == 2 and "'oops' is not an error class" in out.output


def test_the_evaluator_reports_what_it_could_not_use_from_the_live_log(tmp_path: Path) -> None:
    from sqlalchemy import insert

    from coalmine.analysis.engine import Evaluator
    from coalmine.log.record import PredictionRecord
    from coalmine.store.engine import open_engine
    from coalmine.store.predictions import insert_batch
    from coalmine.store.schema import feedback

    engine = open_engine(f"sqlite:///{tmp_path / 'coalmine.db'}")
    records = []
    for i in range(40):
        for version, role in (("v2", "canary"), ("v1", "stable")):
            records.append(PredictionRecord(
                request_id=f"r{i}", model="m", version=version, role=role, ts=1000.0 + i,
                latency_ms=-1.0 if i < 3 else 10.0, status=200, prediction=np.int64(i % 2),
                slices={"region": "eu"}, canary_weight_bp=5000,
            ))  # fmt: skip
    insert_batch(engine, records)
    with engine.begin() as conn:  # labels the model's class indices can never equal
        conn.execute(insert(feedback), [
            {"request_id": f"r{i}", "label": json.dumps("yes" if i % 2 else "no"),
             "outcomes": None, "ts": 2000.0} for i in range(40)
        ])  # fmt: skip
    ev = Evaluator(engine, model="m", candidate="v2", baseline="v1", mode="canary",
                   criteria=[Criterion(metric="accuracy", margin=0.01),
                             Criterion(metric="latency_mean", margin=5)])  # fmt: skip
    j = ev.evaluate()
    assert "latency: 3 candidate and 3 baseline values were NaN, infinite or negative" in " ".join(
        j.notes
    )
    assert any(n.startswith("labels: 80 labelled requests were not scored: label") for n in j.notes)
    acc = next(r for r in j.results if r.name == "accuracy" and r.slice is None)
    assert acc.n_candidate == 0  # not 40 wrong answers

"""Drift is descriptive (a point estimate against a limit): every output says so."""

from __future__ import annotations

import numpy as np

from coalmine.analysis import Analysis


def test_drift_is_labelled_descriptive_in_the_sentence_summary_and_json() -> None:
    rng = np.random.default_rng(3)
    a = Analysis([{"metric": "psi"}, {"metric": "js"}], max_slices=0)
    a.add_batch("candidate", predictions=list(rng.integers(0, 3, 1500)))
    a.add_batch("baseline", predictions=list(rng.integers(0, 3, 1500)))
    j = a.judge()
    for r in j.results:
        assert "descriptive" in r.sentence and "not an anytime-valid test" in r.sentence
        assert "descriptive" in r.to_dict()["sentence"]
    assert j.summary().count("descriptive") == 2

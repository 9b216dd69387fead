"""The paired canary's judgement by seeded simulation: the stable version also answered each
canary request, so accuracy is judged on same-request pairs in a canary (mode "canary").

Both error sides at the boundary are ≤ α (upper Clopper–Pearson bound), and the pairs are
used: a clear regression FAILs, an equal candidate PASSes, and a 2-point drop at 5% takes
fewer labelled candidate samples than unpaired when the versions mostly agree.
"""

from __future__ import annotations

from coalmine.analysis.boundary import Scenario, run_binary, run_paired
from coalmine.analysis.sequential import Verdict
from coalmine.analysis.sequential.simulation import clopper_pearson

ALPHA = 0.05


def _accuracy(margin: float, p_candidate: float, looks: int = 50, per_look: int = 100) -> Scenario:
    return Scenario({"metric": "accuracy", "margin": margin}, looks=looks, per_look=per_look,
                    rates=lambda k: (p_candidate, 0.90), mode="canary")  # fmt: skip


def test_paired_canary_at_the_boundary_neither_passes_nor_fails_beyond_alpha() -> None:
    # exactly as bad as allowed (1 point worse, margin 1 point): a PASS promotes a
    # regression, a FAIL rolls back for nothing; the versions disagree on 4% of answers
    out = run_paired(_accuracy(0.01, 0.89), 400, seed=4242, disagreement=0.04)
    (k_pass, n), (k_fail, _) = out.rate(Verdict.PASS), out.rate(Verdict.FAIL)
    for what, k in (("PASS", k_pass), ("FAIL", k_fail)):
        upper = clopper_pearson(k, n)[1]
        assert upper <= ALPHA, f"{what} in {k}/{n} runs at the boundary (CP upper {upper:.3f})"


def test_paired_canary_decides_on_the_pairs() -> None:
    worse = run_paired(_accuracy(0.01, 0.85), 100, seed=11, disagreement=0.08)
    equal = run_paired(_accuracy(0.02, 0.90), 100, seed=12, disagreement=0.04)
    assert worse.rate(Verdict.FAIL)[0] >= 95
    assert equal.rate(Verdict.PASS)[0] >= 90


def test_a_two_point_drop_at_five_percent_needs_fewer_samples_paired() -> None:
    # 0.90 -> 0.88, margin 0, a judgement every 50 labelled candidate samples
    drop = _accuracy(0.0, 0.88, looks=200, per_look=50)
    unpaired = run_binary(drop, 60, seed=21)
    paired = run_paired(drop, 60, seed=22, disagreement=0.04)
    assert paired.rate(Verdict.FAIL)[0] >= 57
    assert paired.median_samples(Verdict.FAIL) < unpaired.median_samples(Verdict.FAIL) / 1.5

"""A rollout written into a real SQLite store the way the gateway and controller write it.

The story: model `digits`, production v1, candidate v3 that is as good overall but wrong far
more often in region=north. 20 s of shadow (every request mirrored), then a 20% canary that
the analysis fails on the north slice after 40 s. Deterministic (fixed seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, insert

from coalmine.store.schema import feedback, predictions, rollout_events, rollouts, routes
from coalmine.ui.snapshots import record_snapshot

T0 = 1_790_000_000.0
SPEC = {
    "shadow": {"mirror_share": 100.0, "min_duration": 10, "min_samples": 50},
    "canary": {"steps": [{"weight": 20}, {"weight": 50}, {"weight": 100}]},
    "on_failure": "rollback",
}


@dataclass
class Seeded:
    rollout_id: int
    north_wrong_candidate: int
    shadow_disagreements: int


def _criterion(name, metric, slice_, verdict, est, half, thr, n, sentence):  # type: ignore[no-untyped-def]
    return {
        "name": name, "metric": metric, "slice": slice_, "verdict": verdict, "estimate": est,
        "lower": est - half if half is not None else None,
        "upper": est + half if half is not None else None, "threshold": thr,
        "n_candidate": n, "n_baseline": 5 * n, "sentence": sentence, "critical": False,
        "must": "not_fail",
    }  # fmt: skip


def judgement(t: float, final: bool = False) -> dict[str, object]:
    n = int(10 + 8 * t)
    half = 0.6 / (1 + t) ** 0.5
    north = -0.04 - 0.14 * min(t / 40, 1)
    north_half = 1.0 / (1 + t) ** 0.5
    north_verdict = "fail" if north + north_half < -0.02 else "continue"
    results = [
        _criterion("accuracy", "accuracy", None, "continue", -0.01, half, -0.02, n,
                   f"accuracy: candidate −0.01 against production after {n} labels"),
        _criterion("error_rate", "error_rate", None, "pass" if t > 10 else "continue", 0.0,
                   0.02, 0.01, n, "errors: no more than production"),
        _criterion("p95_latency", "latency_p95", None, "continue", 1.2, float("inf"), 1.5, n,
                   "p95 latency: bounds still infinite"),
        _criterion("accuracy", "accuracy", "region=north", north_verdict, north, north_half,
                   -0.02, n // 2, f"accuracy in region=north: {north:+.2f} against production"),
        _criterion("accuracy", "accuracy", "region=south", "continue", 0.01, north_half, -0.02,
                   n // 2, "accuracy in region=south: +0.01"),
    ]  # fmt: skip
    verdict = "fail" if final or north_verdict == "fail" else "inconclusive"
    # each version's newest CPU/memory window; the canary's evaluator counts from 1 again
    window = int(t // 2) if t < 20 else int((t - 20) // 2) + 1
    resources = {
        "v1": {"windows": window, "cpu_ms_per_request": 0.80 + 0.05 * math.sin(t),
               "memory_mb": 92.0 + 0.1 * t},
        "v3": {"windows": window, "cpu_ms_per_request": 0.95 + 0.05 * math.cos(t),
               "memory_mb": 96.0 + 0.6 * t},
    }  # fmt: skip
    notes = ["noise floor: a fresh baseline of production's version agrees with production "
             f"on 92.0% of {n} requests"]  # fmt: skip
    return {"verdict": verdict, "results": results, "n_candidate": n, "n_baseline": 5 * n,
            "notes": notes, "resources": resources}  # fmt: skip


WARNINGS = [
    "step 20%: accuracy needs about 4,100 labelled samples and will see about 1,200 "
    "within its max_duration",
    "step 50%: accuracy needs about 2,000 labelled samples and will see about 1,500 "
    "within its max_duration",
    "p95_latency: step 20%: a p95 bound needs about 570 calls before it is finite",
]


def seed_rollout(
    engine: Engine,
    *,
    end_phase: str = "rolled_back",
    model: str = "digits",
    spec: dict[str, object] | None = None,
) -> Seeded:
    """Write the story up to `end_phase` (`canary` leaves it running at 20%; `promoted`
    ends it promoted after the same canary)."""
    rng = np.random.default_rng(7)
    ended = end_phase != "canary"
    promoted = end_phase == "promoted"
    spec = SPEC if spec is None else spec
    with engine.begin() as conn:
        rid = conn.execute(
            insert(rollouts).values(
                model=model, active_model=None if ended else model, candidate="v3",
                candidate_url="http://127.0.0.1:9/v3", previous_stable="v1",
                spec=json.dumps(spec), phase=end_phase, step_index=2 if promoted else 0,
                canary_weight_bp=0 if ended else 2000, mirror_bp=0, started_at=T0,
                step_started_at=T0 + 20, updated_at=T0 + 40,
                ended_at=T0 + 41 if ended else None,
                outcome=end_phase if ended else None,
                reason="promoted: every step advanced" if promoted else
                "accuracy on region=north failed: −0.18 [−0.30, −0.06] below −0.02"
                if ended else None,
                last_judgement=json.dumps(judgement(40, final=ended and not promoted)),
                version=5,
            )
        ).inserted_primary_key[0]  # fmt: skip
        conn.execute(
            insert(routes).values(
                model=model, stable="v3" if promoted else "v1", canary=None if ended else "v3",
                canary_weight_bp=0 if ended else 2000, shadow=None, mirror_bp=0, salt=model,
                rollout_id=None if ended else rid, revision=4, updated_at=T0 + 40,
            )
        )  # fmt: skip
        events = [
            (T0, "created", "pending", "pending", 0, 0, 0,
             "; ".join(["rollout of v3 over v1", *(f"warning: {w}" for w in WARNINGS)]),
             None, None),
            (T0 + 0.5, "start_shadow", "pending", "shadow", 0, 0, 10000, "shadow started",
             None, None),
            (T0 + 20, "advance", "shadow", "canary", 0, 2000, 0,
             "shadow passed: agreement 0.97 ≥ 0.9", "pass", judgement(20)),
        ]  # fmt: skip
        if promoted:
            events += [
                (T0 + 40, "promote", "canary", "promoted", 2, 0, 0,
                 "promoted: every step advanced", "not_fail", None),
            ]  # fmt: skip
        elif ended:
            events += [
                (T0 + 40, "fail", "canary", "rolling_back", 0, 0, 0,
                 "accuracy on region=north failed", None, judgement(40, final=True)),
                (T0 + 41, "rolled_back", "rolling_back", "rolled_back", 0, 0, 0,
                 "rolled back: v1 serves everything", None, None),
            ]  # fmt: skip
        for seq, (ts, kind, a, b, step, w, m, reason, evidence, j) in enumerate(events, 1):
            conn.execute(
                insert(rollout_events).values(
                    rollout_id=rid, seq=seq, ts=ts, kind=kind, from_phase=a, to_phase=b,
                    step_index=step, canary_weight_bp=w, mirror_bp=m, reason=reason,
                    evidence=evidence, judgement=json.dumps(j) if j else None,
                )
            )  # fmt: skip
        for k in range(2, 41, 2):
            record_snapshot(
                conn, rid, "shadow" if k < 20 else "canary", 0, 0 if k < 20 else 2000,
                judgement(k, final=ended and not promoted and k == 40), ts=T0 + k,
            )  # fmt: skip

        rows: list[dict[str, object]] = []
        labels: list[dict[str, object]] = []
        north_wrong = disagreements = 0
        for i in range(800):
            ts = T0 + 1 + i * 0.05
            region = "north" if i % 2 else "south"
            truth = int(rng.integers(0, 10))
            v1 = truth if rng.random() < 0.9 else (truth + 1) % 10
            p_wrong = 0.4 if region == "north" else 0.05
            v3 = truth if rng.random() > p_wrong else (truth + 3) % 10
            rid_s = f"req-{i:04d}"
            base = {
                "request_id": f"{model}-{rid_s}", "model": model, "ts": ts, "status": 200,
                "error_class": None, "slices": json.dumps({"region": region}),
                "canary_weight_bp": 0, "rollout_id": rid,
            }  # fmt: skip
            features = json.dumps({"instances": [[i % 16, truth, 3]]})
            shadow_phase = ts < T0 + 20
            canary = not shadow_phase and i % 5 == 0
            rows.append(
                base | {"version": "v3" if canary else "v1", "role": "canary" if canary else
                        "stable", "latency_ms": float(rng.gamma(4, 2.0) + (3 if canary else 0)),
                        "prediction": json.dumps({"predictions": [v3 if canary else v1]}),
                        "input": features}
            )  # fmt: skip
            if shadow_phase:
                rows.append(
                    base | {"version": "v3", "role": "shadow",
                            "latency_ms": float(rng.gamma(4, 2.5)),
                            "prediction": json.dumps({"predictions": [v3]}), "input": None,
                            "status": 500 if i % 97 == 0 else 200,
                            "error_class": "http_5xx" if i % 97 == 0 else None}
                )  # fmt: skip
                disagreements += int(v1 != v3 and i % 97 != 0)
            if i % 3 != 2:  # labels arrive for two thirds of the traffic
                labels.append(
                    {"request_id": f"{model}-{rid_s}", "label": json.dumps(truth), "ts": ts + 5}
                )
                if canary and region == "north" and v3 != truth:
                    north_wrong += 1
        conn.execute(insert(predictions), rows)
        conn.execute(insert(feedback), labels)
    return Seeded(int(rid), north_wrong, disagreements)

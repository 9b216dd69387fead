"""Production calls in flight per model, which cap the mirror's copies like for like."""

from __future__ import annotations

from coalmine.gateway.mirror import ShadowMirror


def test_serving_counts_production_calls_in_flight_per_model() -> None:
    # the copies' like-for-like cap is read from these counts when a copy is offered
    mirror = ShadowMirror(None, None, queue_size=1, workers=1, timeout_s=1.0)  # type: ignore[arg-type]
    with mirror.serving("m"), mirror.serving("m"), mirror.serving("other"):
        assert mirror._serving == {"m": 2, "other": 1}
    try:
        with mirror.serving("m"):
            assert mirror._serving["m"] == 1
            raise RuntimeError("the call failed")
    except RuntimeError:
        pass
    assert mirror._serving == {"m": 0, "other": 0}

"""Test your pipeline against a real Coalmine, the way httpx ships a mock transport.

Everything here is the real thing, started for one test: `coalmine serve` in its own
process (gateway, control API and rollout controller) on loopback ports the OS picks and a
fresh SQLite store; scikit-learn models in real model-server processes; labelled traffic
through the gateway. Nothing is faked, so a pipeline that passes here talks to Coalmine the
way it will in production.

    from coalmine.testing import LocalCoalmine, Traffic, fast_spec, serve_estimator

    with serve_estimator(current, "iris", "v1") as v1, serve_estimator(new, "iris", "v2") as v2:
        with LocalCoalmine({"iris": {"v1": v1}}) as cm, Traffic(cm.gateway_url, "iris", X, y):
            rollout = cm.client().start_rollout("iris", "v2", v2.url, fast_spec())
            assert rollout.wait(timeout=120)["phase"] == "promoted"

`fast_spec()` makes the rollout decide in seconds rather than hours.
"""

from coalmine.testing._local import LocalCoalmine
from coalmine.testing._models import serve_estimator
from coalmine.testing._spec import fast_spec
from coalmine.testing._traffic import Traffic

__all__ = ["LocalCoalmine", "Traffic", "fast_spec", "serve_estimator"]

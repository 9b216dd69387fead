"""Schemathesis against the control API's own OpenAPI document, on a real server.

uvicorn on a loopback port over a real SQLite store, authenticated with the API token; the
document is the one the API serves. Every operation gets `EXAMPLES` generated requests
(schema-valid and schema-violating), each checked by schemathesis's default checks: no 5xx,
status codes, content types, headers and bodies as documented, invalid input rejected,
valid input accepted. All operations are fuzzed and every failure is reported at once; the
count of requests sent is printed at the end of the run (tests/fuzz/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from coalmine.config import parse_config
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.control_api import control_api
from tests.fuzz.counts import COUNTS

TOKEN = "fuzz-token-Qm3v"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 20  # per operation: ~350 requests, ~15 s

# The rollout spec is documented as a free-form object (`spec: {}`) and validated by the
# rollout spec's own rules (422 with each field's path), so a "schema-valid" spec of random
# keys is rightly refused: positive_data_acceptance does not apply to POST /rollouts.
# Likewise the batch ingest's items name a configured model and a registered version: a
# schema-valid item naming model "0" is rightly refused (422 naming items.N.model).
VALIDATED_BY_ITS_OWN_RULES = {"POST /api/v1/rollouts", "POST /api/v1/predictions"}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("fuzz") / "c.db"
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{db}"},
            "models": [
                {"name": "iris", "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}],
                 "routing": {"stable": "v1"}}
            ],
        }
    )  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    try:
        with control_api(engine, TOKEN) as url:
            yield url
    finally:
        engine.dispose()


def test_control_api_conforms_to_its_openapi_document(api_url: str) -> None:
    doc = httpx.get(f"{api_url}/api/v1/openapi.json", headers=AUTH).raise_for_status().json()
    schema = schemathesis.openapi.from_dict(doc)
    sent = {"requests": 0, "operations": 0}
    failures: list[str] = []
    with httpx.Client() as plain:
        # the document itself is behind the token like every route
        assert plain.get(f"{api_url}/api/v1/openapi.json").status_code == 401
    for result in schema.get_all_operations():
        operation = result.ok()
        sent["operations"] += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case: schemathesis.Case) -> None:
            sent["requests"] += 1
            excluded = []
            if case.operation.label in VALIDATED_BY_ITS_OWN_RULES:
                excluded.append(positive_data_acceptance)
            case.call_and_validate(
                base_url=api_url,
                headers=AUTH,
                excluded_checks=excluded,
            )

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # fuzz every operation, report all
            failures.append(f"{operation.label}: {exc}")
    COUNTS["control API requests (schemathesis)"] += sent["requests"]
    COUNTS["control API operations"] += sent["operations"]
    assert sent["operations"] >= 15 and sent["requests"] >= 10 * sent["operations"]
    assert not failures, "\n\n".join(failures)

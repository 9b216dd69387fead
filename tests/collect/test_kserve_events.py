"""Reading KServe logger events and pairing their halves (pure parts)."""

from __future__ import annotations

import pytest

from coalmine.collect.cloudevents import EventError, read_event
from coalmine.collect.pairing import Pairer
from tests.collect.kserve_logger import event_headers


def test_a_binary_mode_event_is_read_with_its_attributes() -> None:
    headers = event_headers(
        "response", "abc", "iris", 1_700_000_000.25, endpoint="canary",
        metadata={"X-Request-Id": ["r-1"]},
    )  # fmt: skip
    event = read_event({k.lower(): v for k, v in headers.items()}, b'{"predictions": [1]}')
    assert (event.kind, event.id, event.service, event.endpoint) == (
        "response", "abc", "iris", "canary",
    )  # fmt: skip
    assert (event.namespace, event.component) == ("default", "predictor")
    assert event.time == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert event.header("x-request-id") == "r-1"
    assert event.body == b'{"predictions": [1]}'


def test_a_structured_event_is_read_too() -> None:
    body = (
        b'{"specversion": "1.0", "id": "i", "type": "org.kubeflow.serving.inference.request",'
        b' "source": "s", "inferenceservicename": "iris", "data": {"instances": [[1]]}}'
    )
    event = read_event({"content-type": "application/cloudevents+json"}, body)
    assert (event.kind, event.service, event.body) == ("request", "iris", b'{"instances": [[1]]}')


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ce-type": "com.example.other"}, "ce-type"),
        ({"ce-specversion": "0.3"}, "ce-specversion"),
        ({"ce-id": ""}, "ce-id"),
        ({"ce-inferenceservicename": ""}, "ce-inferenceservicename"),
        ({"ce-metadata": "{not json"}, "ce-metadata"),
        ({"ce-metadata": "[1]"}, "ce-metadata"),
        ({"ce-id": "x" * 600}, "ce-id"),
    ],
)
def test_an_unusable_event_names_its_attribute(change: dict[str, str], field: str) -> None:
    headers = {k.lower(): v for k, v in event_headers("request", "i", "iris", 1.0).items()}
    with pytest.raises(EventError) as caught:
        read_event({**headers, **change}, b"{}")
    assert caught.value.field == field


def _event(kind: str, call_id: str, service: str = "iris"):  # type: ignore[no-untyped-def]
    headers = {k.lower(): v for k, v in event_headers(kind, call_id, service, 1.0).items()}
    return read_event(headers, b"{}")


def test_halves_pair_in_either_order_and_only_within_one_service() -> None:
    pairer = Pairer(timeout_s=10, max_pending=100)
    assert pairer.add(_event("response", "a"), 0.0) is None
    assert pairer.add(_event("request", "a", "other"), 0.1) is None  # another service
    request, response = pairer.add(_event("request", "a"), 0.2)  # type: ignore[misc]
    assert (request.event.kind, response.event.kind) == ("request", "response")
    assert pairer.add(_event("request", "b"), 0.3) is None
    assert pairer.add(_event("request", "b"), 0.4) is None  # the same half again
    pair = pairer.add(_event("response", "b"), 0.5)
    assert pair is not None and pair[0].arrived == 0.3
    assert (pairer.paired, pairer.repeated, len(pairer)) == (2, 1, 1)


def test_waiting_halves_expire_and_memory_stays_bounded() -> None:
    pairer = Pairer(timeout_s=5, max_pending=3)
    for i in range(5):
        pairer.add(_event("request", f"r{i}"), float(i))
    assert len(pairer) == 3 and pairer.evicted == 2  # r0, r1 gave way
    gone = pairer.expire(now=8.5)  # r2 (t=2) and r3 (t=3) waited 5 s or more
    assert [w.event.id for w in gone] == ["r2", "r3"]
    assert pairer.expired_requests == 2 and len(pairer) == 1
    assert pairer.add(_event("response", "r4"), 8.6) is not None

"""nginx's access log as a latency/status source: the documented JSON log format written
by the real Debian nginx routing with the `nginx` provider's config, read from a file
(across a rotation) and from a loopback syslog listener, into prediction-log rows."""

from __future__ import annotations

import http.client
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coalmine.collect.nginx_log import (
    AccessLogCollector,
    FileTail,
    LineError,
    SyslogListener,
    log_format,
    parse_line,
    to_record,
)
from coalmine.config import StickyKey, parse_config
from coalmine.providers.nginx import NginxProvider
from coalmine.routing.state import RouteState
from coalmine.store.engine import open_engine
from coalmine.store.routes import RouteRepository
from tests.collect.nginx_stack import nginx_with, reopen_logs, with_access_log
from tests.providers.nginx_harness import NGINX, placeholder_settings, upstreams


def test_a_line_of_the_format_is_read_and_mapped() -> None:
    line = (
        '<190>Nov 30 07:50:00 host coalmine: {"ts":"1764489000.125","model":"iris",'
        '"request_id":"r1","upstream":"coalmine_iris_canary","addr":"127.0.0.1:9 : '
        '127.0.0.1:10","status":"200","upstream_status":"502 : 200",'
        '"upstream_time":"0.001 : 0.020","key":"u1"}'
    )
    entry = parse_line(line)
    assert (entry.role, entry.status, entry.latency_ms, entry.key) == ("canary", 200, 20.0, "u1")
    route = RouteState("iris", "v1", canary="v2", canary_weight_bp=500, rollout_id=2,
                       urls={"v1": "http://127.0.0.1:9", "v2": "http://localhost:10"})  # fmt: skip
    record = to_record(entry, route)
    assert record is not None
    assert (record.version, record.role, record.rollout_id, record.canary_weight_bp) == (
        "v2", "canary", 2, 500,
    )  # fmt: skip
    failed = parse_line(line.replace('"502 : 200"', '"504"'))
    assert (failed.status, to_record(failed, route).error_class) == (504, "http_5xx")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line",
    ["not json", '{"ts":"1","model":"iris"}', '[1]',
     '{"ts":"1","model":"iris","request_id":"r","upstream":"elsewhere","status":"200"}',
     '{"ts":"x","model":"iris","request_id":"r","upstream":"coalmine_iris_stable","status":"200"}'],
)  # fmt: skip
def test_other_lines_are_refused(line: str) -> None:
    with pytest.raises(LineError):
        parse_line(line)


def test_the_format_is_valid_nginx() -> None:
    text = log_format("iris-2.b")
    assert text.startswith("log_format coalmine_iris_2_b escape=json")
    assert "$coalmine_iris_2_b_request_id" in text and "$proxy_host" in text


STICKY = StickyKey(header="X-User-Id")


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[tuple[Any, RouteState, Any]]:
    if not NGINX.exists():
        pytest.skip(f"{NGINX} is not installed")
    db = tmp_path / "c.db"
    with upstreams("v1", "v2") as ups:
        config = parse_config({
            "store": {"url": f"sqlite:///{db}"},
            "models": [{"name": "iris", "routing": {"stable": "v1"}, "versions": [
                {"name": n, "url": ups.url(n)} for n in ("v1", "v2")]}],
        })  # fmt: skip
        engine = open_engine(config.store.url)
        routes = RouteRepository(engine)
        routes.seed_from_config(config)
        route = routes.set_route("iris", canary="v2", canary_weight_bp=3000, rollout_id=5)
        try:
            yield engine, route, db
        finally:
            engine.dispose()


def _send(nginx: Any, n: int, start: int = 0) -> dict[str, str]:
    served = {}
    for i in range(start, start + n):
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5)
        rid = f"req-{i}"
        conn.request("POST", "/v1/models/iris:predict", body=b"{}",
                     headers={"X-User-Id": f"u{i}", "X-Request-Id": rid})  # fmt: skip
        response = conn.getresponse()
        served[rid] = response.read().decode()
        conn.close()
    return served


def _wait_for_lines(path: Path, n: int) -> None:
    """nginx writes a request's log line after it sent the answer: wait for the line too."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} did not reach {n} lines")


def _rows(db: Path) -> dict[str, tuple[str, str, int, float]]:
    with sqlite3.connect(db) as conn:
        return {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                "SELECT request_id, version, role, status, latency_ms, rollout_id FROM predictions"
            )
        }


def _check(rows: dict[str, Any], served: dict[str, str]) -> None:
    assert set(rows) == set(served)
    for rid, version in served.items():
        got_version, role, status, latency, rollout = rows[rid]
        assert got_version == version and role == ("canary" if version == "v2" else "stable")
        assert status == 200 and latency >= 0 and rollout == 5
    assert {v for v in served.values()} == {"v1", "v2"}


def test_rows_from_a_followed_file_across_a_rotation(
    tmp_path: Path, routed: tuple[Any, RouteState, Path]
) -> None:
    engine, route, db = routed
    provider = NginxProvider("iris", STICKY, placeholder_settings(tmp_path))
    access = tmp_path / "access.json"
    locations = with_access_log(provider.location_snippet(), f"{access} coalmine_iris")
    with nginx_with(tmp_path, provider.render(route), locations, log_format("iris")) as nginx:
        tail = FileTail(access)
        collector = AccessLogCollector(engine, [tail])
        served = _send(nginx, 60)
        access.rename(tmp_path / "access.json.1")  # logrotate: rename, then USR1
        served |= _send(nginx, 20, start=60)  # still written to the renamed file
        _wait_for_lines(tmp_path / "access.json.1", 80)
        collector.collect_once()
        reopen_logs(nginx)
        deadline = time.monotonic() + 5
        while not access.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        served |= _send(nginx, 40, start=80)  # the new file
        _wait_for_lines(access, 40)
        collector.collect_once()
        collector.close()
    _check(_rows(db), served)
    assert collector.skipped == 0


def test_rows_from_the_syslog_listener(
    tmp_path: Path, routed: tuple[Any, RouteState, Path]
) -> None:
    engine, route, db = routed
    provider = NginxProvider("iris", STICKY, placeholder_settings(tmp_path))
    listener = SyslogListener("127.0.0.1", 0)
    target = f"syslog:server=127.0.0.1:{listener.port},tag=coalmine coalmine_iris"
    locations = with_access_log(provider.location_snippet(), target)
    with nginx_with(tmp_path, provider.render(route), locations, log_format("iris")) as nginx:
        collector = AccessLogCollector(engine, [listener], poll_s=0.05).start()
        served = _send(nginx, 80)
        deadline = time.monotonic() + 10
        while collector.written < len(served) and time.monotonic() < deadline:
            time.sleep(0.05)
        collector.close()
    _check(_rows(db), served)


def test_the_config_starts_a_collector_beside_the_api(tmp_path: Path) -> None:
    from tests.control_api import control_api

    db, access = tmp_path / "c.db", tmp_path / "access.json"
    access.write_text("")
    config = parse_config({
        "store": {"url": f"sqlite:///{db}"},
        "collect": {"nginx_log": {"file": str(access)}},
        "models": [{"name": "iris", "routing": {"stable": "v1"},
                    "versions": [{"name": "v1", "url": "http://127.0.0.1:9"}]}],
    })  # fmt: skip
    engine = open_engine(config.store.url)
    RouteRepository(engine).seed_from_config(config)
    line = (
        '{"ts":"%f","model":"iris","request_id":"r-%d","upstream":"coalmine_iris_stable",'
        '"addr":"127.0.0.1:9","status":"200","upstream_status":"200","upstream_time":"0.004",'
        '"key":"u"}\n'
    )
    try:
        with control_api(engine, "t", config=config):
            with access.open("a") as f:
                f.writelines(line % (time.time(), i) for i in range(5))
            deadline = time.monotonic() + 10
            while len(_rows(db)) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
        rows = _rows(db)
        assert sorted(rows) == [f"r-{i}" for i in range(5)]
        assert {r[:4] for r in rows.values()} == {("v1", "stable", 200, 4.0)}
    finally:
        engine.dispose()

"""The nginx provider's pure side: what it renders, and what it refuses to render."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalmine.config import StickyKey
from coalmine.providers.base import ProviderError
from coalmine.providers.nginx import NginxProvider, percent
from coalmine.routing.state import RouteState
from tests.providers.nginx_harness import placeholder_settings

URLS = {"v1": "http://127.0.0.1:9001", "v2": "http://10.0.0.2:9002/", "v3": "http://shadow:80"}


def provider(tmp_path: Path, sticky: StickyKey | None = None) -> NginxProvider:
    return NginxProvider("iris.v-1", sticky, placeholder_settings(tmp_path))


def split_parts(text: str) -> list[str]:
    block = text.split("$coalmine_iris_v_1_upstream {\n", 1)[1].split("}", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_percent_has_nginx_two_decimals() -> None:
    assert [percent(bp) for bp in (1, 500, 1234, 10_000)] == [
        "0.01%", "5.00%", "12.34%", "100.00%",
    ]  # fmt: skip


def test_the_canary_owns_the_low_hashes_and_the_baseline_the_top(tmp_path: Path) -> None:
    route = RouteState(
        model="iris.v-1", stable="v1", canary="v2", canary_weight_bp=1500, salt="s",
        urls=URLS, baseline_url="http://127.0.0.1:9004", baseline_bp=1500,
    )  # fmt: skip
    assert split_parts(provider(tmp_path).render(route)) == [
        "15.00% coalmine_iris_v_1_canary;",
        "70.00% coalmine_iris_v_1_stable;",
        "* coalmine_iris_v_1_baseline;",
    ]


def test_full_weight_and_no_canary_leave_one_part(tmp_path: Path) -> None:
    p = provider(tmp_path)
    full = RouteState(model="m", stable="v1", canary="v2", canary_weight_bp=10_000, urls=URLS)
    assert split_parts(p.render(full)) == ["* coalmine_iris_v_1_canary;"]
    assert split_parts(p.render(RouteState(model="m", stable="v1", urls=URLS))) == [
        "* coalmine_iris_v_1_stable;"
    ]


def test_sticky_key_sources(tmp_path: Path) -> None:
    assert provider(tmp_path, StickyKey(header="X-User-Id")).key == "$http_x_user_id"
    assert provider(tmp_path, StickyKey(cookie="uid")).key == "$cookie_uid"
    assert provider(tmp_path, None).key == "$request_id"
    with pytest.raises(ProviderError, match="json_field"):
        provider(tmp_path, StickyKey(json_field="user"))


def test_the_salt_reaches_nginx_only_as_a_hash(tmp_path: Path) -> None:
    route = RouteState(model="m", stable="v1", salt='x"; include /etc/passwd; #', urls=URLS)
    text = provider(tmp_path).render(route)
    assert "passwd" not in text and 'x"' not in text


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:9001", "plain http only"),
        ("http://127.0.0.1:9001/v1/models/x", "without path"),
        ("http://127.0.0.1:9001/?a=b", "without path"),
        ("http://user:pw@127.0.0.1:9001", "without path"),
        ("http://127.0.0.1:9001;evil", "not a host|port"),
        ("http://ho st:9001", "not a host"),
    ],
)
def test_a_url_nginx_cannot_take_is_refused_with_its_reason(
    tmp_path: Path, url: str, reason: str
) -> None:
    route = RouteState(model="m", stable="v1", urls={"v1": url})
    with pytest.raises(ProviderError, match=f"version 'v1' at .*({reason})"):
        provider(tmp_path).render(route)

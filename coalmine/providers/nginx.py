"""`nginx`: the model's split and mirror as an nginx config file Coalmine owns.

Coalmine writes one file per model, included in the http block of the operator's main
config: an upstream per role, `split_clients` on the sticky key for the split, and
`split_clients` on the request id for the shadow's share. The operator's server block uses
the directives of `location_snippet` once. A new file is checked with `nginx -t` against the
main config (with the new file swapped in) before it replaces the old one by rename, and only
then is the master told to reload (SIGHUP): a refused file never reaches the running nginx.

The bucketing promise holds as in `coalmine.routing.split`: nginx hashes the key
(MurmurHash2, 32 bits) and walks the parts in order, each owning the hashes below its
cumulative share, so the canary listed first owns [0, w) and raising w only moves users from
stable to canary; the baseline, listed last, owns the top. nginx's hash is not Coalmine's
blake2b, so a user's bucket differs between the two gateways (moving a model from one
provider to another mid-rollout reshuffles who is on the canary).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import Engine

from coalmine.config import ModelConfig, NginxTraffic, StickyKey
from coalmine.providers.base import ProviderError, TrafficProvider
from coalmine.providers.registry import register
from coalmine.routing.state import BASIS_POINTS, RouteState

__all__ = ["NginxProvider", "percent"]

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_COOKIE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CHECK_TIMEOUT_S = 30.0
# never used: a role with no version still needs an upstream name the snippet can refer to
_NOWHERE = "server 127.0.0.1:1 down;"


def percent(bp: int) -> str:
    """Basis points as nginx's split_clients percentage (two decimals, its finest step)."""
    return f"{bp // 100}.{bp % 100:02d}%"


def _server(version: str, url: str) -> str:
    """`server host:port;` for a version's base URL, or a ProviderError saying why not.

    Only plain http base URLs without a path: nginx passes the request's own URI on, so a
    base path would be silently dropped. The host is checked so no URL can inject config.
    """
    parts = urlsplit(url)
    where = f"version {version!r} at {url!r}"
    if parts.scheme != "http":
        raise ProviderError(f"{where}: the nginx provider proxies plain http only")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ProviderError(f"{where}: the nginx provider needs a base URL without path")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if not _HOST.match(host):
        raise ProviderError(f"{where}: not a host name nginx can take")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProviderError(f"{where}: not a port nginx can take") from None
    return f"server {host}:{port};"


def _key_variable(sticky: StickyKey | None) -> str:
    """The nginx variable holding the sticky key; without one, every request is its own key."""
    if sticky is None:
        return "$request_id"
    if sticky.header is not None:
        if not _HEADER.match(sticky.header):
            raise ProviderError(f"routing.sticky.header {sticky.header!r}: not an nginx name")
        return "$http_" + sticky.header.lower().replace("-", "_")
    if sticky.cookie is not None:
        if not _COOKIE.match(sticky.cookie):
            raise ProviderError(f"routing.sticky.cookie {sticky.cookie!r}: not an nginx name")
        return "$cookie_" + sticky.cookie
    raise ProviderError(
        "routing.sticky.json_field: nginx cannot read a JSON body field as the sticky key; "
        "use a header or a cookie"
    )


class NginxProvider(TrafficProvider[str]):
    """Desired state: the text of the model's included file."""

    name = "nginx"

    def __init__(self, model: str, sticky: StickyKey | None, settings: NginxTraffic) -> None:
        self.model = model
        self.key = _key_variable(sticky)
        self.settings = settings
        # nginx variable and upstream names allow [A-Za-z0-9_] only
        self.prefix = "coalmine_" + re.sub(r"[^A-Za-z0-9_]", "_", model)

    # -- pure ----------------------------------------------------------------------------

    def render(self, route: RouteState) -> str:
        p = self.prefix
        servers = {"stable": _server(route.stable, route.urls.get(route.stable, ""))}
        servers["canary"] = (
            _server(route.canary, route.urls.get(route.canary, ""))
            if route.canary is not None and route.canary_weight_bp > 0
            else _NOWHERE
        )
        servers["baseline"] = (
            _server(f"{route.stable} (baseline)", route.baseline_url)
            if route.baseline_url and route.baseline_bp > 0
            else _NOWHERE
        )
        mirrored = route.shadow is not None and route.mirror_bp > 0
        servers["shadow"] = (
            _server(route.shadow, route.urls.get(route.shadow, ""))
            if route.shadow is not None and mirrored
            else _NOWHERE
        )
        # the salt is hashed, so nothing a rollout names can end up as nginx syntax
        salt = hashlib.blake2b(route.salt.encode(), digest_size=8).hexdigest()
        lines = [
            f"# Written by Coalmine for model {self.model}: edit the route, not this file.",
            *(f"upstream {p}_{role} {{ {line} keepalive 16; }}" for role, line in servers.items()),
            f"map $http_x_request_id ${p}_request_id {{",
            '    "" $request_id;',
            "    default $http_x_request_id;",
            "}",
            f"map {self.key} ${p}_key {{",
            f'    "" ${p}_request_id;',  # a request without a key: random, as in the gateway
            f"    default {self.key};",
            "}",
            f'split_clients "{salt}:${{{p}_key}}" ${p}_upstream {{',
            *self._parts(route),
            "}",
            f'split_clients "${{{p}_request_id}}" ${p}_mirror {{',
            *(
                [f"    * {'1' if mirrored else '0'};"]
                if not mirrored or route.mirror_bp >= BASIS_POINTS
                else [f"    {percent(route.mirror_bp)} 1;", "    * 0;"]
            ),
            "}",
        ]
        return "\n".join(lines) + "\n"

    def _parts(self, route: RouteState) -> list[str]:
        p = self.prefix
        canary = route.canary_weight_bp if route.canary is not None else 0
        baseline = route.baseline_bp if route.baseline_url else 0
        if canary >= BASIS_POINTS:
            return [f"    * {p}_canary;"]
        parts = []
        if canary > 0:
            parts.append(f"    {percent(canary)} {p}_canary;")
        if baseline > 0:  # stable in the middle, the baseline owns the top buckets
            parts.append(f"    {percent(BASIS_POINTS - canary - baseline)} {p}_stable;")
            parts.append(f"    * {p}_baseline;")
        else:
            parts.append(f"    * {p}_stable;")
        return parts

    def diff(self, desired: str, current: str | None) -> list[str]:
        if current is None:
            return [f"{self.settings.config_path}: not written yet"]
        return [
            line
            for line in difflib.unified_diff(
                current.splitlines(), desired.splitlines(), lineterm="", n=0
            )
            if line[:1] in "+-" and line[:3] not in ("+++", "---")
        ]

    def location_snippet(self, shadow_path: str | None = None) -> str:
        """What the operator's server block needs once (nginx cannot include it for us:
        upstreams and split_clients live in the http block, locations in a server)."""
        p = self.prefix
        path = shadow_path or f"/_coalmine/{self.model}/shadow"
        return (
            "location / {\n"
            f"    mirror {path};\n"
            "    mirror_request_body on;\n"
            "    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n'
            f"    proxy_set_header X-Request-Id ${p}_request_id;\n"
            f"    proxy_pass http://${p}_upstream;\n"
            "}\n"
            f"location = {path} {{\n"
            "    internal;\n"
            f"    if (${p}_mirror = 0) {{ return 204; }}\n"
            # nginx finishes a request only after its mirror: a hung shadow would hold the
            # next request on the client's keep-alive connection, so bound it
            "    proxy_connect_timeout 1s;\n"
            "    proxy_send_timeout 5s;\n"
            "    proxy_read_timeout 5s;\n"
            "    proxy_http_version 1.1;\n"
            '    proxy_set_header Connection "";\n'
            f"    proxy_set_header X-Request-Id ${p}_request_id;\n"
            '    proxy_set_header X-Coalmine-Shadow "1";\n'
            f"    proxy_pass http://{p}_shadow$request_uri;\n"
            "}\n"
        )

    # -- I/O -----------------------------------------------------------------------------

    def read(self) -> str | None:
        try:
            return self.settings.config_path.read_text()
        except FileNotFoundError:
            return None

    def apply(self, desired: str) -> None:
        current = self.read()
        if current == desired:
            return  # idempotent: nothing written, no reload
        target = self.settings.config_path
        staged = _sibling(target, "new")  # unique: two controllers may sync at once
        _write_synced(staged, desired)
        try:
            self.check(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        os.replace(staged, target)  # atomic: nginx sees the old file or the new, whole
        _sync_dir(target.parent)
        try:
            self.reload()
        except ProviderError:
            # put back what the running nginx holds, so the next sync tries again
            if current is None:
                target.unlink(missing_ok=True)
            else:
                previous = _sibling(target, "old")
                _write_synced(previous, current)
                os.replace(previous, target)
            raise

    def check(self, staged: Path) -> None:
        """`nginx -t` on the main config with `staged` included instead of our file."""
        s = self.settings
        main = s.main_config.read_text()
        include = re.compile(
            r"(\binclude\s+)([\"']?)" + re.escape(str(s.config_path)) + r"\2(\s*;)"
        )
        tested, found = include.subn(lambda m: f"{m[1]}{m[2]}{staged}{m[2]}{m[3]}", main)
        if not found:
            raise ProviderError(
                f"{s.main_config} has no `include {s.config_path};`: nginx would not read "
                "the file Coalmine writes"
            )
        # beside the main config, so its relative includes resolve the same way
        test_main = _sibling(s.main_config, "test")
        test_main.write_text(tested)
        command = [str(s.nginx_binary), "-t", "-q", "-c", str(test_main)]
        if s.prefix is not None:
            command[1:1] = ["-p", str(s.prefix)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_CHECK_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderError(f"nginx -t could not run: {exc}") from None
        finally:
            test_main.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ProviderError(
                f"nginx -t refused the config for {self.model}: {done.stderr.strip()[-800:]}"
            )

    def reload(self) -> None:
        """SIGHUP to the master: it re-reads its config and replaces its workers gracefully
        (a config it cannot load leaves the old workers serving)."""
        pid_file = self.settings.pid_file
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise ProviderError(f"cannot reload nginx via {pid_file}: {exc}") from None


def _sibling(path: Path, kind: str) -> Path:
    """A new empty file beside `path` (same directory: a rename stays atomic)."""
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".coalmine-{kind}"
    )
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp's 0600 could keep an nginx of another user from reading
    return Path(name)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(model: ModelConfig, engine: Engine) -> NginxProvider:
    if not isinstance(model.traffic, NginxTraffic):
        raise ValueError(f"models[{model.name}].traffic: not an nginx configuration")
    return NginxProvider(model.name, model.routing.sticky, model.traffic)


register(NginxProvider.name, _build)

"""nginx's access log as a latency and status source when the `nginx` provider routes.

nginx does not see predictions, but it sees every call's upstream, status and time. With
the JSON `log_format` of `log_format(model)` on the model's location, each line says which
of Coalmine's upstreams answered (`$proxy_host`: coalmine_<model>_stable, _canary or
_baseline), the request id Coalmine's file gives the request, the upstream's status and
response time, and the sticky key. A line becomes a prediction-log row without a
prediction: error rate and latency criteria judge it; quality criteria need the
predictions from another collector (the batch ingest, e.g. a logging sidecar).

Parsing and mapping are pure (`parse_line`, `to_record`); `FileTail` follows a file across
rotation, `SyslogListener` takes nginx's `access_log syslog:` messages on a loopback UDP
port, and `AccessLogCollector` writes their rows in batches.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from coalmine.collect import metrics
from coalmine.collect.items import error_class_of
from coalmine.collect.store import insert_new
from coalmine.log.record import PredictionRecord
from coalmine.routing.state import RouteState
from coalmine.store.routes import RouteRepository

__all__ = [
    "AccessEntry", "AccessLogCollector", "FileTail", "LineError", "SyslogListener",
    "log_format", "parse_line", "to_record",
]  # fmt: skip

log = logging.getLogger(__name__)
_SOURCE = "nginx"
_ROLES = ("stable", "canary", "baseline")
MAX_LINE = 16 * 1024


def nginx_prefix(model: str) -> str:
    """The provider's name prefix of a model's upstreams and variables."""
    return "coalmine_" + re.sub(r"[^A-Za-z0-9_]", "_", model)


def log_format(model: str, name: str | None = None) -> str:
    """The `log_format` directive (http block) for `model`'s location's `access_log`."""
    p = nginx_prefix(model)
    return (
        f'log_format {name or p} escape=json \'{{"ts":"$msec","model":"{model}",'
        f'"request_id":"${p}_request_id","upstream":"$proxy_host",'
        '"addr":"$upstream_addr","status":"$status","upstream_status":"$upstream_status",'
        f'"upstream_time":"$upstream_response_time","key":"${p}_key"}}\';'
    )


class LineError(ValueError):
    """A line that is not one of Coalmine's access-log lines (counted, skipped)."""


@dataclass(frozen=True, slots=True)
class AccessEntry:
    ts: float
    model: str
    request_id: str
    role: str  # stable | canary | baseline, from the upstream's name
    addr: str
    status: int  # what the upstream answered (last try); 0: no upstream answered
    latency_ms: float
    key: str


def _last(value: str) -> str:
    # several tries are listed "a, b" (and "a : b" across upstream groups): the last answered
    return re.split(r"\s*[,:]\s*(?=[^,:]*$)", value.strip())[-1] if value else ""


def _syslog_payload(line: str) -> str:
    """The JSON of a line: a file line as is, a syslog message after its header."""
    start = line.find("{")
    if start < 0:
        raise LineError("no JSON object in the line")
    return line[start:]


def parse_line(line: str) -> AccessEntry:
    """One access-log line (from a file, or a syslog message) as an entry, or LineError."""
    if len(line) > MAX_LINE:
        raise LineError(f"longer than {MAX_LINE} characters")
    try:
        obj = json.loads(_syslog_payload(line))
    except (ValueError, RecursionError):
        raise LineError("not JSON") from None
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    fields = {k: obj.get(k) for k in ("ts", "model", "request_id", "upstream", "status")}
    if not all(isinstance(v, str) and v for v in fields.values()):
        raise LineError("a field of the log format is missing")
    model, upstream = str(fields["model"]), str(fields["upstream"])
    prefix = nginx_prefix(model) + "_"
    role = upstream[len(prefix) :] if upstream.startswith(prefix) else ""
    if role not in _ROLES:
        raise LineError(f"upstream {upstream[:80]!r} is not one of {model!r}'s")
    try:
        ts = float(str(fields["ts"]))
        answered = _last(str(obj.get("upstream_status") or ""))
        status = int(answered) if answered.isdigit() else 0
        took = _last(str(obj.get("upstream_time") or ""))
        latency_ms = float(took) * 1000.0 if re.fullmatch(r"\d+(\.\d+)?", took) else 0.0
    except ValueError:
        raise LineError("a number of the log format is not one") from None
    return AccessEntry(
        ts=ts, model=model, request_id=str(fields["request_id"])[:128], role=role,
        addr=str(obj.get("addr") or ""), status=status, latency_ms=latency_ms,
        key=str(obj.get("key") or ""),
    )  # fmt: skip


def _addresses(route: RouteState) -> dict[str, str]:
    """host:port of each version's base URL -> the version (for $upstream_addr)."""
    from urllib.parse import urlsplit

    out = {}
    for version, url in route.urls.items():
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            continue
        out[f"{parts.hostname}:{port}"] = version
    return out


def to_record(entry: AccessEntry, route: RouteState) -> PredictionRecord | None:
    """The row of `entry` under the live route; None when the route has no such version.

    The version is the one whose registered address answered, else the route's version of
    the upstream's role (a host name resolves to another address than it is written)."""
    version = _addresses(route).get(_last(entry.addr))
    if version is None:
        version = route.canary if entry.role == "canary" else route.stable
    if version is None:
        return None
    return PredictionRecord(
        request_id=entry.request_id,
        model=entry.model,
        version=version,
        role=entry.role,
        ts=entry.ts,
        latency_ms=entry.latency_ms,
        status=entry.status,
        error_class=error_class_of(entry.status),
        canary_weight_bp=route.canary_weight_bp,
        rollout_id=route.rollout_id,
    )


# -- sources ---------------------------------------------------------------------------------


class FileTail:
    """The lines appended to a file, across rotation (rename + new file, or truncation).

    `lines()` returns what was appended since the last call. After a rename the old file
    keeps being read for `grace_s` besides the new one: nginx writes to it until it is told
    to reopen its logs (USR1, logrotate's postrotate), and those lines count too.
    """

    def __init__(self, path: Path, *, from_start: bool = False, grace_s: float = 10.0) -> None:
        self.path = path
        self.grace_s = grace_s
        self._file: Any = None
        self._inode: int | None = None
        self._partial = b""
        self._old: tuple[Any, bytes, float] | None = None  # (rotated file, partial, until)
        self._open(at_end=not from_start)  # from now on (unless from_start)

    def _open(self, at_end: bool) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open across calls
        except FileNotFoundError:
            return
        if at_end:
            f.seek(0, os.SEEK_END)
        self._file, self._inode = f, os.fstat(f.fileno()).st_ino

    def lines(self) -> list[str]:
        if self._file is None:
            self._open(at_end=False)
            if self._file is None:
                return []
        out = self._read_old() + self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # rotated away, the new one not there yet: keep the old handle
        if st.st_ino != self._inode:
            if self._old is not None:
                self._old[0].close()
            self._old = (self._file, self._partial, time.monotonic() + self.grace_s)
            self._file, self._partial = None, b""
            self._open(at_end=False)
            out += self._read() if self._file is not None else []
        elif st.st_size < self._file.tell():  # truncated in place (copytruncate)
            self._file.seek(0)
            self._partial = b""
            out += self._read()
        return out

    def _read(self) -> list[str]:
        lines, self._partial = _split(self._partial + self._file.read())
        return lines

    def _read_old(self) -> list[str]:
        if self._old is None:
            return []
        f, partial, until = self._old
        lines, partial = _split(partial + f.read())
        if time.monotonic() > until:
            f.close()
            self._old = None
        else:
            self._old = (f, partial, until)
        return lines

    def close(self) -> None:
        for f in (self._file, self._old[0] if self._old else None):
            if f is not None:
                f.close()
        self._file, self._old = None, None


def _split(data: bytes) -> tuple[list[str], bytes]:
    """Complete lines of `data`, and the unfinished rest (dropped past MAX_LINE)."""
    *complete, rest = data.split(b"\n")
    if len(rest) > MAX_LINE:
        rest = b""
    return [c.decode(errors="replace") for c in complete if c], rest


class SyslogListener:
    """nginx's `access_log syslog:server=HOST:PORT` messages on a loopback UDP socket.

    Only loopback: any local process can send to it, nothing else can."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the syslog listener binds loopback only, not {host!r}")
        family = socket.AF_INET6 if host == "::1" else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])

    def lines(self) -> list[str]:
        out: list[str] = []
        try:
            while len(out) < 1000:
                data = self.sock.recv(65536)
                out.append(data.decode(errors="replace"))
                self.sock.settimeout(0)  # drain what is there, then return
        except (TimeoutError, BlockingIOError):
            pass
        finally:
            self.sock.settimeout(0.2)
        return out

    def close(self) -> None:
        self.sock.close()


class AccessLogCollector:
    """Reads `sources` in a background thread and writes their rows in batches."""

    def __init__(
        self,
        engine: Engine,
        sources: list[Any],
        *,
        poll_s: float = 0.2,
        routes: Callable[[], Mapping[str, RouteState]] | None = None,
    ) -> None:
        self.engine = engine
        self.sources = sources
        self.poll_s = poll_s
        self._routes = routes or RouteRepository(engine).load_all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coalmine-nginx-log", daemon=True)
        self.written = self.skipped = self.unrouted = 0

    def start(self) -> AccessLogCollector:
        self._thread.start()
        return self

    def collect_once(self) -> int:
        """Read every source once and write the rows; returns how many were written."""
        entries = []
        for source in self.sources:
            for line in source.lines():
                try:
                    entries.append(parse_line(line))
                except LineError as exc:
                    self.skipped += 1
                    metrics.EVENTS.labels(_SOURCE, "invalid").inc()
                    log.debug("nginx access log: line skipped: %s", exc)
        if not entries:
            return 0
        live = self._routes()
        records = []
        for entry in entries:
            route = live.get(entry.model)
            record = to_record(entry, route) if route is not None else None
            if record is None:
                self.unrouted += 1
                metrics.EVENTS.labels(_SOURCE, "unrouted").inc()
            else:
                records.append(record)
        done = insert_new(self.engine, records)
        self.written += done.written
        metrics.ROWS.labels(_SOURCE, "written").inc(done.written)
        metrics.ROWS.labels(_SOURCE, "duplicate").inc(done.duplicates)
        return done.written

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.collect_once():
                    self._stop.wait(self.poll_s)
            except Exception:  # a database hiccup: the next poll tries again
                log.exception("nginx access log collection failed")
                self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        try:
            self.collect_once()  # what arrived meanwhile
        finally:
            for source in self.sources:
                source.close()

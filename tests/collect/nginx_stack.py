"""Test helper: the real Debian nginx with extra http-block directives (a log_format) and
access_log lines in the provider's location, reusing the provider tests' harness."""

from __future__ import annotations

import os
import signal
from contextlib import AbstractContextManager
from pathlib import Path

from tests.providers.nginx_harness import Nginx, running_nginx


def with_access_log(snippet: str, *targets: str) -> str:
    """The provider's location snippet with `access_log` lines in its `location /`."""
    lines = "".join(f"    access_log {t};\n" for t in targets)
    return snippet.replace("location / {\n", "location / {\n" + lines, 1)


def nginx_with(
    tmp: Path, first: str, locations: str, http_extra: str
) -> AbstractContextManager[Nginx]:
    """The provider tests' nginx, with `http_extra` in its http block."""
    return running_nginx(tmp, first, locations, http_extra)


def reopen_logs(nginx: Nginx) -> None:
    """What logrotate's postrotate does: USR1 makes the master reopen its log files."""
    os.kill(int((nginx.prefix / "nginx.pid").read_text()), signal.SIGUSR1)

"""Test helper: the real Debian nginx with extra http-block directives (a log_format) and
access_log lines in the provider's location, reusing the provider tests' harness."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coalmine.config import NginxTraffic
from tests.providers.nginx_harness import NGINX, Nginx, free_port, main_config


def with_access_log(snippet: str, *targets: str) -> str:
    """The provider's location snippet with `access_log` lines in its `location /`."""
    lines = "".join(f"    access_log {t};\n" for t in targets)
    return snippet.replace("location / {\n", "location / {\n" + lines, 1)


@contextmanager
def nginx_with(tmp: Path, first: str, locations: str, http_extra: str) -> Iterator[Nginx]:
    prefix = tmp / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    include = prefix / "coalmine-iris.conf"
    include.write_text(first)
    port = free_port()
    main = prefix / "nginx.conf"
    text = main_config(prefix, port, include, locations)
    main.write_text(text.replace("http {\n", "http {\n  " + http_extra + "\n", 1))
    settings = NginxTraffic(
        provider="nginx", config_path=include, main_config=main,
        pid_file=prefix / "nginx.pid", nginx_binary=NGINX, prefix=prefix,
    )  # fmt: skip
    process = subprocess.Popen(
        [str(NGINX), "-p", str(prefix), "-c", str(main)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nginx = Nginx(prefix, port, settings, process)
    try:
        deadline = time.monotonic() + 10
        while not (prefix / "nginx.pid").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {nginx.error_log()}")
            time.sleep(0.05)
        yield nginx
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reopen_logs(nginx: Nginx) -> None:
    """What logrotate's postrotate does: USR1 makes the master reopen its log files."""
    os.kill(int((nginx.prefix / "nginx.pid").read_text()), signal.SIGUSR1)

"""The fuzzers' counts, printed at the end of every run (CI's log keeps them): how many
requests schemathesis sent and how many documents the config properties parsed."""

from __future__ import annotations

from typing import Any

from tests.fuzz.counts import COUNTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if COUNTS:
        parts = ", ".join(f"{what} {n:,}" for what, n in sorted(COUNTS.items()))
        terminalreporter.write_line(f"fuzzing: {parts}")

"""What both prediction-log writers decide, apart from how they wait and do I/O.

`BatchWriter` (a task and worker threads in the gateway's process) and the writer process
(`writer_child`, a plain loop) share:
- `StableSampling`: which stable rows are kept, and the weight of a kept one;
- `write_steps`: how one batch is written, as a generator the writer drives (the shape of
  httpx's auth flow). It yields `Insert(rows)`, to be answered with the rows written or the
  exception raised, and `Wait(seconds)`, to be answered with None once waited. A failed
  write is retried with backoff while the database, not the data, is at fault
  (`transient`), until the deadline; a batch the database rejects for its content is
  written row by row so one bad row cannot block the log;
- `Finisher`: a batch's raw records decoded (`answers.finish_all`), each request's input
  shaped once even when its rows come in different batches.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import exc as sa_exc

from coalmine.config import LoggingConfig
from coalmine.log.answers import finish_all
from coalmine.log.policy import InputPolicy
from coalmine.log.record import LogRecord, PredictionRecord

__all__ = [
    "Finisher", "Insert", "StableSampling", "Tally", "Wait", "transient", "write_steps",
]  # fmt: skip

log = logging.getLogger("coalmine.log.writer")

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
# request ids whose shaped input is remembered: a request's production row and its mirror
# copies' rows, shaped once, may land in different batches
SHAPED_KEPT = 4096


def transient(error: BaseException) -> bool:
    """True when retrying the same batch can succeed (the database, not the data, failed)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError | OSError,
    )


class StableSampling:
    """A stable call made while no rollout runs on its model is kept at
    `logging.stable_sample_rate`, one made during a canary step at
    `logging.stable_sample_rate_during_rollouts`, its row weighted 1/rate; every other row
    is kept in full."""

    def __init__(self, config: LoggingConfig) -> None:
        self.stable_rate = config.stable_sample_rate
        self.stable_rate_in_rollouts = config.stable_sample_rate_during_rollouts

    def rate_for(self, record: LogRecord) -> float:
        """The probability of keeping this row: 1 but for stable calls (module doc).

        During a rollout only while a canary split is in force: the analysis then compares
        the candidate with a uniform subsample of production's calls and conditions its
        count tests on the share of logged rows (analysis/sampling.py). At 0% canary (a
        shadow step) each stable row is half of a shadow pair and is kept.
        """
        if record.role != "stable":
            return 1.0
        if record.rollout_id is None:
            return self.stable_rate
        return self.stable_rate_in_rollouts if record.canary_weight_bp > 0 else 1.0

    def keep(self, record: LogRecord, rng: random.Random) -> bool:
        """False when the row is sampled out (not a loss: the kept ones are weighted)."""
        rate = self.rate_for(record)
        if rate < 1.0:
            if rng.random() >= rate:
                return False
            record.sample_weight = 1.0 / rate
        return True


class Finisher:
    """`finish_all` remembering the inputs it shaped, for up to SHAPED_KEPT request ids."""

    def __init__(self, policy: InputPolicy) -> None:
        self.policy = policy
        self._shaped: dict[str, tuple[bytes, str | None]] = {}

    def __call__(self, records: Iterable[LogRecord]) -> list[PredictionRecord]:
        if len(self._shaped) > SHAPED_KEPT:
            self._shaped = {}
        return finish_all(records, self.policy, self._shaped)


class Tally(Protocol):
    """Where `write_steps` counts what became of the rows."""

    def count_written(self, n: int) -> None: ...
    def count_error(self) -> None: ...
    def count_dropped(self, n: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Insert:
    rows: list[PredictionRecord]


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


Step = Insert | Wait
Answer = int | BaseException | None  # to an Insert: rows written or the error; to a Wait: None
Steps = Generator[Step, Answer, None]


def write_steps(
    batch: list[PredictionRecord],
    tally: Tally,
    deadline: Callable[[], float],
    now: Callable[[], float] = time.monotonic,
) -> Steps:
    """Write one batch, retrying transient failures until written or past `deadline()`
    (read at each retry: a writer told to stop sets it)."""
    delay = BACKOFF_FIRST_S
    while True:
        answer = yield Insert(batch)
        if not isinstance(answer, BaseException):
            tally.count_written(answer or 0)
            return
        tally.count_error()
        if not transient(answer):
            log.warning("prediction log batch rejected (%s); writing row by row", answer)
            yield from _row_by_row(batch, tally, deadline, now)
            return
        if now() + delay >= deadline():
            tally.count_dropped(len(batch))
            log.error("prediction log dropped %d rows: %s", len(batch), answer)
            return
        log.warning("prediction log write failed (%s); retrying in %.2fs", answer, delay)
        yield Wait(delay)
        delay = min(delay * 2, BACKOFF_MAX_S)


def _row_by_row(
    batch: list[PredictionRecord],
    tally: Tally,
    deadline: Callable[[], float],
    now: Callable[[], float],
) -> Steps:
    for record in batch:
        answer = yield Insert([record])
        if not isinstance(answer, BaseException):
            tally.count_written(answer or 0)
            continue
        tally.count_error()
        if transient(answer):  # the database went away mid-way: retry this row
            yield from write_steps([record], tally, deadline, now)
            continue
        tally.count_dropped(1)
        log.error("prediction log dropped a row it cannot store: %s", answer)

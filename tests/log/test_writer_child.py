"""The writer process's frame reader: whole frames out of reads cut anywhere; its rows
written without a run of the cyclic collector."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path

from coalmine.log.answers import raw_record
from coalmine.log.policy import InputPolicy
from coalmine.log.process_writer import FLUSH, ROWS, _raw_as_tuple, frame
from coalmine.log.record import RawRecord
from coalmine.log.writer_child import ChildWriter, Pipe, settle_gc
from coalmine.store.engine import open_engine
from coalmine.store.predictions import count
from tests.log.test_writer import config

ANSWER = b'{"predictions":[[0.1,0.9]],"model_version":"v1"}'
BODY = b'{"instances":[[5.1,3.5,1.4,0.2]],"email":"a@b.c","user_id":17}'


def raws(policy: InputPolicy, i: int) -> list[RawRecord]:
    """One mirrored request's records, as the gateway hands them: a stable call and its
    shadow copy, answers unread, the body deferred for the redacted input."""
    call = ("plain", ANSWER, None, None, policy.shape_later(BODY), {"country": "DE"}, 1000, None)
    return [
        raw_record(f"req-{i}", "m", version, role, 1.7e9 + i, 1.2, 200, None, *call)
        for role, version in (("stable", "v1"), ("shadow", "v3"))
    ]


def test_frames_cut_across_reads_come_out_whole_and_in_order() -> None:
    read_end, write_end = os.pipe()
    pipe = Pipe(read_end)
    frames = [(ROWS, b"x" * 100_000), (FLUSH, b"1"), (ROWS, b""), (ROWS, b"\x00" * 3)]
    data = b"".join(frame(kind, payload) for kind, payload in frames)
    got: list[tuple[bytes, bytes]] = []
    start = 0
    # cut inside a length, a kind, a payload, and between frames (each write fits the pipe)
    for cut in (1, 3, 4, 5, 6, 50_000, 100_005, 100_007, 100_012, len(data)):
        os.write(write_end, data[start:cut])
        start = cut
        got += pipe.frames(1.0)
    assert got == frames
    assert pipe.frames(0.01) == [] and not pipe.ended  # nothing more, but not the end
    os.close(write_end)
    assert pipe.frames(1.0) == [] and pipe.ended
    os.close(read_end)


def test_once_settled_the_writers_rows_cost_no_collection(tmp_path: Path) -> None:
    """The child's rows are freed by reference counting: with the start-up frozen and a
    young generation of GC_YOUNG, writing them runs the cyclic collector not once (CPython's
    defaults ran it every 700 objects, and now and then over all ~80,000 start-up ones)."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = open_engine(url)
    read_end, write_end = os.pipe()
    writer = ChildWriter(
        engine,
        config(inputs="redacted", redact_fields=["email", "user_id"], batch_size=500),
        Pipe(read_end),
    )
    policy = writer.finish.policy
    frames = [
        pickle.dumps([_raw_as_tuple(r) for i in range(n, n + 125) for r in raws(policy, i)])
        for n in range(0, 2_000, 125)
    ]
    collected: list[int] = []

    def count_collections(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["generation"])

    threshold = gc.get_threshold()
    settle_gc()
    gc.callbacks.append(count_collections)
    try:
        for payload in frames:  # 250 rows a frame, two frames a batch
            writer.receive([(ROWS, payload)])
            writer.write_batches()
        writer.write_batches(final=True)
    finally:
        gc.callbacks.remove(count_collections)
        gc.unfreeze()
        gc.set_threshold(*threshold)
        writer.connection.close()
        engine.dispose()
        os.close(read_end)
        os.close(write_end)
    assert writer.written == count(open_engine(url)) == 4_000
    assert collected == []

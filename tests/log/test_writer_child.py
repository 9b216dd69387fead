"""The writer process's frame reader: whole frames out of reads cut anywhere."""

from __future__ import annotations

import os

from coalmine.log.process_writer import FLUSH, ROWS, frame
from coalmine.log.writer_child import Pipe


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

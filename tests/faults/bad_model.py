"""A model server that misbehaves on purpose, for the fault suite.

    python tests/faults/bad_model.py MODE

prints `listening on http://127.0.0.1:PORT` and serves until killed. Standalone (no
Coalmine import), so it starts in a blink. MODE, for every request:
- garbage: a 200 whose body is not JSON;
- half: a response head promising 1,000 bytes, 10 of them, then the connection closes;
- stuck: never accepts a connection (a listen backlog of 1, full after the first
  connection: the kernel then leaves further clients waiting on their handshake).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time


async def _serve(mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        if mode == "garbage":
            body = b"\x00\xffnot json at all<html>"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
        else:  # half
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"predicti'
            )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def stuck() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    while True:
        time.sleep(3600)


async def main(mode: str) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(mode, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("garbage", "half", "stuck"):
        sys.exit("usage: bad_model.py garbage|half|stuck")
    if sys.argv[1] == "stuck":
        stuck()
    asyncio.run(main(sys.argv[1]))

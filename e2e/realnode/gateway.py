#!/usr/bin/env python3
"""Forwards TCP ports of the pod network's gateway to the same ports on 127.0.0.1.

Why this exists: the API server, the object store and the ZenML server listen on 127.0.0.1 only
(every kubeconfig and client on the host uses that, and nothing of the cluster may listen on the
machine's own network). Pods reach them through Services whose EndpointSlices name the gateway
address of the pod bridge (see ``network.py``); this process accepts there and opens the same
port on loopback. It holds no state: a restarted API server is simply dialled again by the next
connection.

Usage: gateway.py --listen 10.244.0.1 --to 127.0.0.1 --ports 6443,8333 --state DIR
(``--state`` only marks the process as the one of that node directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import sys
from collections.abc import Sequence

BUFFER = 1 << 16
CONNECT_TIMEOUT_S = 5.0


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a closed port would answer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF (then half-close the other side): True, or False when a side failed."""
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return True
    except (ConnectionError, OSError):
        return False


async def _serve(
    target: str, port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(
            asyncio.open_connection(target, port), CONNECT_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        _reset(client_w)
        return
    _nodelay(client_w)
    _nodelay(up_w)
    pending = {
        asyncio.create_task(_pipe(client_r, up_w)),
        asyncio.create_task(_pipe(up_r, client_w)),
    }
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not all(t.result() for t in done):
                # One side is gone: the other must not wait for it (a watch would hang on).
                for w in (client_w, up_w):
                    _reset(w)
    finally:
        for t in pending:
            t.cancel()
        for w in (client_w, up_w):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def _main(listen: str, target: str, ports: Sequence[int]) -> None:
    servers = []
    for port in ports:

        async def handler(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _serve(target, port, r, w)

        servers.append(await asyncio.start_server(handler, listen, port, reuse_address=True))
        print(f"[gateway] {listen}:{port} -> {target}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--ports", required=True, help="comma-separated TCP ports")
    ap.add_argument("--state", required=True)
    args = ap.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p]
    asyncio.run(_main(args.listen, args.to, ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

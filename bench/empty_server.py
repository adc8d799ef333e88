"""The HTTP ceiling: an aiohttp handler that reads the body and returns 200, nothing else.

It runs like the gateway does (uvloop, no access log, the same body limit, N processes
on one SO_REUSEPORT port), so the gap between its requests/s and the gateway's is what
signature, parsing, deduplication and Kafka cost.

    python -m bench.empty_server --port 18080 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import socket

from aiohttp import web

from gateway.settings import HttpSettings
from gateway.workers import LISTEN_BACKLOG, ListenAddress, reuse_port_socket

ANSWER = b'{"status":"accepted"}'


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def serve(sock: socket.socket) -> None:
    import asyncio

    settings = HttpSettings()
    app = web.Application(client_max_size=settings.max_body_bytes + 1)
    app.router.add_post(settings.path, accept)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    await stopping.wait()
    await runner.cleanup()


def run_worker(address: ListenAddress) -> None:
    import uvloop

    sock = reuse_port_socket(address)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    uvloop.run(serve(sock))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve an empty webhook handler on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    address = ListenAddress(socket.AF_INET, ("127.0.0.1", args.port))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=run_worker, args=(address,)) for _ in range(args.workers)]
    for worker in workers:
        worker.start()
    print(" ".join(str(worker.pid) for worker in workers), flush=True)

    def stop(signal_number, _frame) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()

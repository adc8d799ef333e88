"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

Request i is due at ``start + i / rate``. Its latency is measured from that due time,
not from when a connection was free to send it, so a server that stalls is charged for
every request that queued behind the stall (no coordinated omission). Requests go over
up to ``--connections`` keep-alive HTTP/1.1 connections, one request at a time on each.
It parses just enough HTTP for the gateway's responses: a status line, headers with
Content-Length, a body.

    python -m bench.loadgen --port 18080 --rate 5000 --duration-s 10 --corpus corpus.bin

It prints one JSON object: counts, status codes, errors and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

import orjson

from bench.corpus import read_corpus

DRAIN_TIMEOUT_S = 15.0
TIMER_RESOLUTION_S = 0.001


class Connection(asyncio.Protocol):
    def __init__(self, generator: "OpenLoop") -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: tuple[float, float] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def send(self, request: bytes, due_at: float) -> None:
        self.current = (due_at, time.perf_counter())
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current is not None:
            header_end = self.buffer.find(b"\r\n\r\n")
            if header_end < 0:
                return
            head = bytes(self.buffer[:header_end])
            length = _content_length(head)
            if len(self.buffer) < header_end + 4 + length:
                return
            del self.buffer[: header_end + 4 + length]
            status = int(head[9:12])
            due_at, sent_at = self.current
            self.current = None
            keep_alive = b"connection: close" not in head.lower()
            self.generator.finished(self, status, due_at, sent_at, keep_alive)

    def connection_lost(self, error: Exception | None) -> None:
        self.closed = True
        if self.current is not None:
            due_at, _ = self.current
            self.current = None
            self.generator.failed(self, "connection_lost", due_at)
        else:
            self.generator.forget(self)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class OpenLoop:
    def __init__(self, host: str, port: int, requests: list[bytes], rate: float, duration_s: float, connections: int) -> None:
        self.host = host
        self.port = port
        self.requests = requests
        self.rate = rate
        self.duration_s = duration_s
        self.max_connections = connections
        self.loop = asyncio.get_running_loop()
        self.idle: list[Connection] = []
        self.open_count = 0
        self.connecting = 0
        self.queue: collections.deque[tuple[bytes, float]] = collections.deque()
        self.latencies_s: list[float] = []
        self.service_s: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.scheduled = 0
        self.outstanding = 0
        self.all_done = asyncio.Event()

    async def run(self) -> dict:
        cpu_start_s = time.process_time()
        # perf_counter, not loop.time(): uvloop's clock has a resolution of 1 ms.
        start = time.perf_counter() + 0.05
        total = int(self.rate * self.duration_s)
        while self.scheduled < total:
            now = time.perf_counter()
            due_count = min(total, int((now - start) * self.rate) + 1)
            while self.scheduled < due_count:
                request = self.requests[self.scheduled % len(self.requests)]
                self.dispatch(request, start + self.scheduled / self.rate)
                self.scheduled += 1
            # uvloop's timers tick in whole milliseconds: a shorter sleep returns at once
            # and would spin, taking a core from the server under test.
            next_due = start + self.scheduled / self.rate
            await asyncio.sleep(max(TIMER_RESOLUTION_S, next_due - time.perf_counter()))

        if self.outstanding:
            try:
                await asyncio.wait_for(self.all_done.wait(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                self.errors["no_answer"] += self.outstanding
        return self.summary(time.perf_counter() - start, time.process_time() - cpu_start_s)

    def dispatch(self, request: bytes, due_at: float) -> None:
        self.outstanding += 1
        self.all_done.clear()
        if self.idle:
            self.idle.pop().send(request, due_at)
            return
        self.queue.append((request, due_at))
        if self.open_count + self.connecting < self.max_connections:
            self.connecting += 1
            self.loop.create_task(self.connect())

    async def connect(self) -> None:
        try:
            _transport, connection = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError as error:
            self.connecting -= 1
            if self.queue:
                _request, due_at = self.queue.popleft()
                self.record_error(type(error).__name__, due_at)
            return
        self.connecting -= 1
        self.open_count += 1
        self.next_request(connection)

    def next_request(self, connection: Connection) -> None:
        if connection.closed:
            return
        if self.queue:
            request, due_at = self.queue.popleft()
            connection.send(request, due_at)
        else:
            self.idle.append(connection)

    def finished(self, connection: Connection, status: int, due_at: float, sent_at: float, keep_alive: bool) -> None:
        now = time.perf_counter()
        self.statuses[status] += 1
        self.latencies_s.append(now - due_at)
        self.service_s.append(now - sent_at)
        self._settle()
        if keep_alive:
            self.next_request(connection)
        else:
            connection.transport.close()

    def failed(self, connection: Connection, kind: str, due_at: float) -> None:
        self.forget(connection)
        self.record_error(kind, due_at)

    def record_error(self, kind: str, due_at: float) -> None:
        self.errors[kind] += 1
        self._settle()

    def forget(self, connection: Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        self.open_count -= 1

    def _settle(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.all_done.set()

    def summary(self, elapsed_s: float, cpu_s: float) -> dict:
        latencies = sorted(self.latencies_s)
        service = sorted(self.service_s)
        ok = self.statuses.get(200, 0)
        return {
            "rate_per_s": self.rate,
            "duration_s": self.duration_s,
            "elapsed_s": round(elapsed_s, 3),
            "scheduled": self.scheduled,
            "answered": len(latencies),
            "ok": ok,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()) + sum(c for s, c in self.statuses.items() if s != 200),
            "connections_opened": self.open_count,
            # The generator shares the machine's cores with the server it measures.
            "generator_cpu_us_per_request": round(cpu_s / max(1, self.scheduled) * 1e6, 1),
            "latency_ms": _percentiles(latencies),
            "service_time_ms": _percentiles(service),
        }


def _percentiles(sorted_values: list[float]) -> dict[str, float]:
    if not sorted_values:
        return {}

    def at(quantile: float) -> float:
        index = min(len(sorted_values) - 1, int(quantile * len(sorted_values)))
        return round(sorted_values[index] * 1000, 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999), "max": round(sorted_values[-1] * 1000, 3)}


def build_requests(corpus: Path, host: str, port: int, path: str) -> list[bytes]:
    requests = []
    for signature, body in read_corpus(corpus):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"X-HITL-Signature: sha256={signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def main_async(args: argparse.Namespace) -> dict:
    requests = build_requests(args.corpus, args.host, args.port, args.path)
    generator = OpenLoop(args.host, args.port, requests, args.rate, args.duration_s, args.connections)
    return await generator.run()


def main() -> None:
    parser = argparse.ArgumentParser(description="Send a corpus at a fixed rate and report latency from each due time.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/webhooks/hitl")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--connections", type=int, default=256, help="most connections open at once (default: 256)")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the load generator only targets servers on this machine: 127.0.0.1, ::1 or localhost")

    import uvloop

    result = uvloop.run(main_async(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()

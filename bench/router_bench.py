"""The router's benchmark: events/s from Kafka to a local HTTP receiver, in per-loop order.

Events are produced into fresh topics first (keyed by loop id, as the gateway does),
each carrying ``bench_seq``, its position among the events of its loop in its family
topic: Kafka orders records within a partition, so the order that a consumer can keep
is per loop and topic, not across topics. Then
``hitl-gateway route`` runs with 1 or N http routes that all point at a receiver in this
process. The receiver counts deliveries per route and checks, per route, loop and
family, that ``bench_seq`` never goes backwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from gateway.envelope import EnvelopeReader
from gateway.producer import cloudevents_headers, ensure_topics
from gateway.samples import EVENT_TYPES, new_object_id, sample_event

FAMILIES = ("request", "loop", "user", "system", "api_key", "integration", "other")
RUN_TIMEOUT_S = 90.0


class Receiver:
    """Counts deliveries per route and checks per-loop order."""

    def __init__(self, routes: int) -> None:
        self.received = [0] * routes
        self.out_of_order = [0] * routes
        self.repeated = [0] * routes
        self.last_seq: list[dict[tuple[str, str], int]] = [defaultdict(lambda: -1) for _ in range(routes)]
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def handle(self, request: web.Request) -> web.Response:
        route = int(request.match_info["route"])
        event = orjson.loads(await request.read())
        loop_id, seq = event["bench_loop"], event["bench_seq"]
        loop_id = (loop_id, event["event"].split(".")[0])

        last = self.last_seq[route][loop_id]
        if seq < last:
            self.out_of_order[route] += 1
        elif seq == last:
            self.repeated[route] += 1
        else:
            self.last_seq[route][loop_id] = seq
        self.received[route] += 1

        now = time.monotonic()
        self.first_at = self.first_at or now
        self.last_at = now
        return web.Response(status=204)


async def produce_events(bootstrap: str, prefix: str, count: int, loops: int) -> None:
    """Produce ``count`` events over ``loops`` loops, in order, as the gateway would."""
    await ensure_topics(bootstrap, [prefix + family for family in FAMILIES], 6, 1)
    rng = random.Random(5)
    loop_ids = [new_object_id() for _ in range(loops)]
    sequence: dict[tuple[str, str], int] = defaultdict(int)
    reader = EnvelopeReader()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        pending = []
        for _ in range(count):
            loop_id = rng.choice(loop_ids)
            event_type = rng.choice(EVENT_TYPES)
            event = sample_event(event_type, loop_id=loop_id)
            event["bench_loop"] = loop_id
            event["bench_seq"] = sequence[loop_id, event_type.split(".")[0]]
            sequence[loop_id, event_type.split(".")[0]] += 1
            body = orjson.dumps(event)
            envelope, _ = reader.read(body, {})
            topic = prefix + (envelope.family if envelope.family in FAMILIES else "other")
            # send() appends to the batch in call order, which keeps each loop's order.
            pending.append(await producer.send(topic, value=body, key=loop_id.encode(), headers=cloudevents_headers(envelope, "urn:bench")))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def run_router(directory: Path, bootstrap: str, prefix: str, routes: int, events: int) -> dict:
    """Run ``hitl-gateway route`` with ``routes`` http routes until all ``events`` arrived on each."""
    receiver = Receiver(routes)
    app = web.Application()
    app.router.add_post("/route-{route}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    config_path = directory / f"routes-{routes}.yaml"
    config_path.write_text(yaml.safe_dump(_routing_config(bootstrap, prefix, routes, port)))
    router = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "route", "--config", str(config_path), "--metrics-port", "0", "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(directory / f"router-{routes}.log").open("wb"),
    )
    started = time.monotonic()
    try:
        while min(receiver.received) < events and time.monotonic() - started < RUN_TIMEOUT_S:
            if router.returncode is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        if router.returncode is None:
            router.send_signal(signal.SIGTERM)
            await router.wait()
        await runner.cleanup()

    delivered = sum(receiver.received)
    elapsed_s = (receiver.last_at - receiver.first_at) if receiver.first_at and receiver.last_at else 0.0
    return {
        "routes": routes,
        "events": events,
        "delivered": delivered,
        "complete": min(receiver.received) >= events,
        "events_per_s_per_route": round(min(receiver.received) / elapsed_s) if elapsed_s else None,
        "deliveries_per_s": round(delivered / elapsed_s) if elapsed_s else None,
        "out_of_order": sum(receiver.out_of_order),
        "repeated": sum(receiver.repeated),
        "router_exit": router.returncode,
    }


def _routing_config(bootstrap: str, prefix: str, routes: int, port: int) -> dict:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"{prefix}router",
            "topics": [prefix + family for family in FAMILIES],
        },
        "routes": [
            {
                "name": f"route-{index}",
                "sink": {"type": "http", "url": f"http://127.0.0.1:{port}/route-{index}", "timeout_s": 10},
                "on_failure": "drop",
            }
            for index in range(routes)
        ],
    }


async def router_benchmark(directory: Path, bootstrap: str, events: int, route_counts: tuple[int, ...]) -> list[dict]:
    results = []
    for routes in route_counts:
        prefix = f"rbench{os.urandom(3).hex()}."
        await produce_events(bootstrap, prefix, events, loops=1000)
        results.append(await run_router(directory, bootstrap, prefix, routes, events))
    return results

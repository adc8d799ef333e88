"""Hot reload of the routing file while the router runs against the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import structlog

from gateway.routing.config import load_routing_config
from gateway.routing.reload import ConfigWatcher

from .conftest import Receiver, Topics, event_body, http_route, produce_events, running_router, wait_until, write_routes

pytestmark = pytest.mark.kafka

FAST_RETRY = {"attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "jitter": 0.0}


def reloads(router, result: str) -> float:
    return router.metrics.registry.get_sample_value("hitl_router_config_reloads_total", {"result": result}) or 0.0


@pytest.mark.timeout(120)
async def test_reload_applies_valid_rejects_invalid(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    group_id = f"reload-{uuid.uuid4().hex[:8]}"

    def write(routes: list[dict]) -> Path:
        return write_routes(tmp_path / "routes.yaml", bootstrap=kafka_bootstrap, topics=topics, group_id=group_id, routes=routes)

    path = write([http_route("a", receiver, retry=FAST_RETRY)])
    topic = topics.of("request")
    batch = iter(range(100))

    async def send_and_expect(routes: set[str], absent: set[str] = frozenset()) -> None:
        loop_id = f"loop{next(batch)}"
        await produce_events(kafka_bootstrap, topic, [event_body(loop_id, seq) for seq in range(3)])
        for route in routes:
            await wait_until(
                lambda: {(loop_id, seq) for seq in range(3)} <= receiver.distinct(route),
                timeout_s=20,
                what=f"{loop_id} at route {route}",
            )
        for route in absent:
            assert all(arrival.loop_id != loop_id for arrival in receiver.arrivals[route])

    async with running_router(path) as router:
        watcher = ConfigWatcher(path, router.apply_config, router.metrics, interval_s=0.1)
        await watcher.start()
        try:
            await send_and_expect({"a"})

            write([http_route("a", receiver, retry=FAST_RETRY), http_route("b", receiver, retry=FAST_RETRY)])
            await wait_until(lambda: reloads(router, "success") == 1, timeout_s=10, what="the reload adding route b")
            assert router.route_names == ["a", "b"]
            await send_and_expect({"a", "b"})

            with structlog.testing.capture_logs() as logs:
                path.write_text(path.read_text().replace("type: http", "type: carrier-pigeon", 1))
                await wait_until(lambda: reloads(router, "failure") == 1, timeout_s=10, what="the rejected reload")
            (rejected,) = [entry for entry in logs if entry["event"] == "config_reload_rejected"]
            assert "carrier-pigeon" in rejected["reason"]
            assert router.route_names == ["a", "b"]
            await send_and_expect({"a", "b"})

            # Route a's sink changes (rebuilt: new URL) and route b goes away.
            moved = http_route("a", receiver, retry=FAST_RETRY)
            moved["sink"]["url"] = receiver.url_for("a-moved")
            write([moved])
            await wait_until(lambda: reloads(router, "success") == 2, timeout_s=10, what="the reload moving a and removing b")
            await send_and_expect({"a-moved"}, absent={"a", "b"})

            # SIGHUP reloads the file even when it did not change.
            watcher.request_reload()
            await wait_until(lambda: reloads(router, "success") == 3, timeout_s=10, what="the forced reload")
        finally:
            await watcher.stop()


@pytest.mark.timeout(120)
async def test_reload_replaces_blocked_route(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.failing_routes = {"broken"}
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=f"reload-{uuid.uuid4().hex[:8]}",
        routes=[{**http_route("crm", receiver, retry=FAST_RETRY, on_failure="block")}],
    )
    broken = path.read_text().replace(receiver.url_for("crm"), receiver.url_for("broken"))
    path.write_text(broken)
    expected = {(f"loop{loop}", seq) for loop in range(3) for seq in range(4)}
    await produce_events(kafka_bootstrap, topics.of("request"), [event_body(loop, seq) for loop, seq in sorted(expected)])

    async with running_router(path) as router:
        await wait_until(lambda: receiver.failures["broken"] >= 3, timeout_s=20, what="the blocked route's retries")

        # The operator fixes the URL; the held events cannot drain, so the reload rewinds them.
        await router.apply_config(load_routing_config(_fixed(path, receiver)))

        await wait_until(lambda: receiver.distinct("crm") == expected, timeout_s=30, what="the held events at the fixed URL")
    for loop, seqs in receiver.first_arrival_order("crm").items():
        assert seqs == [0, 1, 2, 3], f"{loop} arrived as {seqs}"


def _fixed(path: Path, receiver: Receiver) -> Path:
    fixed = path.with_name("fixed.yaml")
    fixed.write_text(path.read_text().replace(receiver.url_for("broken"), receiver.url_for("crm")))
    return fixed

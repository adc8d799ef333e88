"""The router started before the ingress: it creates the family topics it reads."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .conftest import Receiver, Topics, event_body, http_route, produce_events, running_router, wait_until, write_routes

pytestmark = pytest.mark.kafka


async def test_router_creates_missing_family_topics(
    kafka_bootstrap: str, topic_prefix: str, receiver: Receiver, tmp_path: Path
) -> None:
    # No `topics` fixture: nothing exists until the router starts.
    topics = Topics(topic_prefix)
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=f"early-{uuid.uuid4().hex[:8]}",
        routes=[http_route("crm", receiver)],
    )

    async with running_router(path):
        await produce_events(kafka_bootstrap, topics.of("request"), [event_body("loop-a", seq) for seq in range(3)])
        await wait_until(
            lambda: receiver.distinct("crm") == {("loop-a", seq) for seq in range(3)},
            timeout_s=20,
            what="events produced after the router created the topics",
        )

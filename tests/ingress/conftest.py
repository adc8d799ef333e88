"""Fixtures for ingress tests: a gateway on 127.0.0.1 in front of the real test broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signatures import sign_hitl

SECRET = "ingress-test-secret"


class GatewayClient:
    """Send signed webhooks to a running test gateway."""

    def __init__(self, server: TestServer, session: aiohttp.ClientSession, settings: GatewaySettings) -> None:
        self.server = server
        self.session = session
        self.settings = settings
        self.url = str(server.make_url(settings.http.path))

    async def post(self, body: bytes, *, secret: str = SECRET, headers: dict[str, str] | None = None):
        all_headers = {"X-HITL-Signature": sign_hitl(body, secret), "Content-Type": "application/json"}
        all_headers.update(headers or {})
        async with self.session.post(self.url, data=body, headers=all_headers) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def get(self, path: str):
        async with self.session.get(self.server.make_url(path)) as response:
            return response.status, await response.text()


@pytest.fixture
async def start_gateway(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Callable[..., Awaitable[GatewayClient]]]:
    """Factory: start a gateway with settings overrides; everything started is stopped."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**sections) -> GatewayClient:
        data = {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "topic_prefix": topic_prefix, "partitions": 3, **sections.pop("kafka", {})},
            **sections,
        }
        settings = GatewaySettings.model_validate(data)
        server = TestServer(create_app(settings, [SECRET]), host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return GatewayClient(server, session, settings)

    yield start

    for server, session in reversed(started):
        await session.close()
        await server.close()

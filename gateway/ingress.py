"""The HTTP ingress: signed webhooks in, Kafka records out, 2xx only after the broker's ack."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import HttpVersion11, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.dedup import DedupStore, Receipt
from gateway.envelope import Envelope, EnvelopeReader
from gateway.errors import BodyTooLarge, RequestError, SignatureRejected, UnavailableError
from gateway.metrics import IngressMetrics
from gateway.producer import EventProducer
from gateway.signatures import SignatureVerifier

log = structlog.get_logger("gateway.ingress")

READ_CHUNK_BYTES = 64 * 1024


@dataclass
class Ingress:
    """Everything one webhook request needs, built once at start-up."""

    verifier: SignatureVerifier
    reader: EnvelopeReader
    dedup: DedupStore
    producer: EventProducer
    metrics: IngressMetrics
    max_body_bytes: int
    retry_after_s: int

    async def handle(self, request: web.Request) -> web.Response:
        self.metrics.in_flight.inc()
        envelope: Envelope | None = None
        try:
            body = await read_body(request, self.max_body_bytes)
            self.verifier.verify(body, request.headers)
            envelope, _event = self.reader.read(body, request.headers)
            # Shielded: once a record may be on its way to the broker, the reservation
            # must end in complete or release even if the client goes away.
            status, receipt = await asyncio.shield(self._deliver(envelope, body))
        except RequestError as error:
            return self._reject(error, envelope)
        except UnavailableError as error:
            return self._unavailable(error, envelope)
        finally:
            self.metrics.in_flight.dec()

        self.metrics.count_outcome(status)
        return _json_response(
            200,
            {
                "status": status,
                "event_id": envelope.event_id,
                "topic": receipt.topic,
                "partition": receipt.partition,
                "offset": receipt.offset,
            },
        )

    async def _deliver(self, envelope: Envelope, body: bytes) -> tuple[str, Receipt]:
        earlier = await self.dedup.claim(envelope.event_id)
        if earlier is not None:
            self.metrics.duplicates.inc()
            return "duplicate", earlier

        started = time.perf_counter()
        try:
            receipt = await self.producer.produce(envelope, body)
        except BaseException:
            await self.dedup.release(envelope.event_id)
            raise
        self.metrics.produce_latency.observe(time.perf_counter() - started)
        await self.dedup.complete(envelope.event_id, receipt)
        return "accepted", receipt

    def _reject(self, error: RequestError, envelope: Envelope | None) -> web.Response:
        self.metrics.count_outcome(error.reason)
        if isinstance(error, SignatureRejected):
            self.metrics.signature_failures.inc()
        log.warning(
            "request_rejected",
            reason=error.reason,
            status=error.status,
            detail=str(error),
            event_id=envelope.event_id if envelope else None,
        )
        return _json_response(error.status, {"error": error.reason, "message": str(error)})

    def _unavailable(self, error: UnavailableError, envelope: Envelope | None) -> web.Response:
        self.metrics.count_outcome(error.reason)
        log.warning(
            "request_deferred",
            reason=error.reason,
            detail=str(error),
            event_id=envelope.event_id if envelope else None,
            retry_after_s=self.retry_after_s,
        )
        return _json_response(
            error.status,
            {"error": error.reason, "message": f"{error}; nothing was accepted, retry later"},
            headers={"Retry-After": str(self.retry_after_s)},
        )

    async def expect_continue(self, request: web.Request) -> web.Response | None:
        """Handle ``Expect: 100-continue``: 413 at once for a declared body over the limit.

        Without this, aiohttp sends ``100 Continue`` first and the client uploads the
        whole body before it learns that the body was too large.
        """
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            return self._reject(BodyTooLarge(f"the body is {declared} bytes, more than the limit of {self.max_body_bytes}"), None)
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def healthz(self, request: web.Request) -> web.Response:
        return _json_response(200, {"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        if await self.producer.is_ready():
            return _json_response(200, {"status": "ready"})
        return _json_response(503, {"status": "not_ready", "message": "the Kafka broker is not reachable"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """Read the raw body, stopping as soon as it exceeds ``max_body_bytes``."""
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise BodyTooLarge(f"the body is {declared} bytes, more than the limit of {max_body_bytes}")

    chunks = []
    size = 0
    while True:
        chunk = await request.content.read(READ_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body_bytes:
            raise BodyTooLarge(f"the body is more than the limit of {max_body_bytes} bytes")
        chunks.append(chunk)


def _json_response(status: int, payload: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers)


def build_app(ingress: Ingress, *, webhook_path: str) -> web.Application:
    # read_body enforces the body limit while it reads the stream. aiohttp's own limit
    # applies only to request.read(), and its 413 has no JSON body.
    app = web.Application(client_max_size=ingress.max_body_bytes + 1)
    app.router.add_post(webhook_path, ingress.handle, expect_handler=ingress.expect_continue)
    app.router.add_get("/healthz", ingress.healthz)
    app.router.add_get("/readyz", ingress.readyz)
    app.router.add_get("/metrics", ingress.metrics_page)
    app.middlewares.append(_method_not_allowed_as_json)
    return app


@web.middleware
async def _method_not_allowed_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as error:
        allowed = ", ".join(sorted(error.allowed_methods))
        return _json_response(
            405,
            {"error": "method_not_allowed", "message": f"{request.method} is not allowed here; use {allowed}"},
            headers={"Allow": allowed},
        )
    except web.HTTPNotFound:
        return _json_response(404, {"error": "not_found", "message": f"no endpoint at {request.path}"})

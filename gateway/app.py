"""Assemble the ingress from its settings and run it."""

from __future__ import annotations

import asyncio
import signal
import socket

import structlog
from aiohttp import web
from aiohttp import log as web_log

from gateway.dedup import DedupStore
from gateway.dedup.memory import MemoryDedupStore
from gateway.envelope import EnvelopeReader
from gateway.ingress import Ingress, build_app
from gateway.metrics import IngressMetrics
from gateway.producer import EventProducer
from gateway.settings import GatewaySettings
from gateway.signatures import build_verifier

log = structlog.get_logger("gateway.app")

INGRESS_KEY = web.AppKey("ingress", Ingress)


def build_dedup_store(settings: GatewaySettings, metrics: IngressMetrics) -> DedupStore:
    dedup = settings.dedup
    if dedup.backend == "redis":
        from gateway.dedup.redis import RedisDedupStore

        return RedisDedupStore(dedup, on_bypass=metrics.dedup_bypassed.inc)
    return MemoryDedupStore(
        window_s=dedup.window_s,
        max_entries=dedup.max_entries,
        wait_timeout_s=dedup.wait_timeout_s,
        reservation_ttl_s=dedup.reservation_ttl_s,
        on_evict=metrics.dedup_evictions.inc,
    )


def create_app(settings: GatewaySettings, secrets: list[str]) -> web.Application:
    """Build the aiohttp application; the producer starts and stops with it."""
    signature = settings.signature
    verifier = build_verifier(
        signature.scheme,
        secrets,
        header=signature.header,
        timestamp_header=signature.timestamp_header,
        tolerance_s=signature.tolerance_s,
    )
    envelope = settings.envelope
    reader = EnvelopeReader(
        event_type_paths=envelope.event_type_paths,
        loop_id_paths=envelope.loop_id_paths,
        event_id_headers=envelope.event_id_headers,
        event_id_paths=envelope.event_id_paths,
        occurred_at_paths=envelope.occurred_at_paths,
    )
    metrics = IngressMetrics()
    producer = EventProducer(settings.kafka, settings.cloudevents)
    ingress = Ingress(
        verifier=verifier,
        reader=reader,
        dedup=build_dedup_store(settings, metrics),
        producer=producer,
        metrics=metrics,
        max_body_bytes=settings.http.max_body_bytes,
        retry_after_s=settings.kafka.retry_after_s,
    )
    app = build_app(ingress, webhook_path=settings.http.path)
    app[INGRESS_KEY] = ingress

    async def start_producer(app: web.Application) -> None:
        await producer.start()

    async def stop_producer(app: web.Application) -> None:
        await producer.stop()
        await ingress.dedup.close()

    app.on_startup.append(start_producer)
    app.on_cleanup.append(stop_producer)
    return app


async def serve(settings: GatewaySettings, secrets: list[str], *, sock: socket.socket | None = None) -> None:
    """Run the ingress until SIGINT or SIGTERM, then stop gracefully.

    Stopping closes the listening socket, lets requests in flight finish for up to
    ``http.shutdown_timeout_s``, and flushes the producer. ``sock`` is a listening
    socket made by the caller; a worker of ``serve --workers N`` passes its
    SO_REUSEPORT socket here.
    """
    app = create_app(settings, secrets)
    runner = web.AppRunner(
        app,
        access_log=web_log.access_logger if settings.http.access_log else None,
        shutdown_timeout=settings.http.shutdown_timeout_s,
    )
    await runner.setup()
    if sock is not None:
        site: web.BaseSite = web.SockSite(runner, sock)
        port = sock.getsockname()[1]
    else:
        site = web.TCPSite(runner, settings.http.host, settings.http.port, reuse_port=False)
        port = settings.http.port
    await site.start()
    log.info(
        "gateway_listening",
        url=f"http://{_display_host(settings.http.host)}:{port}{settings.http.path}",
        kafka=settings.kafka.bootstrap_servers,
        signature_scheme=settings.signature.scheme,
        dedup=settings.dedup.backend,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stopping.set)
    try:
        await stopping.wait()
        log.info("gateway_stopping", shutdown_timeout_s=settings.http.shutdown_timeout_s)
    finally:
        await runner.cleanup()
        log.info("gateway_stopped")


def missing_speedups() -> list[str]:
    """Name the C extensions of the hot path that are not in use.

    Each falls back silently to pure Python, which costs several times the CPU per
    request: aiokafka's record batch builder (absent without a binary wheel, or turned
    off by AIOKAFKA_NO_EXTENSIONS) and aiohttp's HTTP parser (AIOHTTP_NO_EXTENSIONS).
    """
    from aiohttp import http_parser
    from aiokafka.record import default_records

    missing = []
    if default_records.DefaultRecordBatchBuilder is default_records._DefaultRecordBatchBuilderPy:
        missing.append("aiokafka.record._crecords")
    if http_parser.HttpRequestParser is http_parser.HttpRequestParserPy:
        missing.append("aiohttp._http_parser")
    return missing


def warn_without_speedups() -> None:
    missing = missing_speedups()
    if missing:
        log.warning(
            "speedups_missing",
            modules=missing,
            effect="every request costs several times more CPU",
            fix="unset AIOKAFKA_NO_EXTENSIONS and AIOHTTP_NO_EXTENSIONS, and install aiokafka and aiohttp "
            "from binary wheels for this Python and platform (pip install --force-reinstall --only-binary :all: aiokafka aiohttp)",
        )


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

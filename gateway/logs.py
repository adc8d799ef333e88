"""structlog set-up: one event per line, JSON by default, readable on a terminal."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def _orjson_dumps(data, default=None) -> str:
    return orjson.dumps(data, default=default).decode()


def configure_logging(*, format: str = "auto", level: str = "info", access_log: bool = False) -> None:
    """Route structlog and the standard library's logging to stderr in one format.

    ``format`` is ``json``, ``console`` or ``auto`` (console when stderr is a terminal).
    """
    if format == "auto":
        format = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if format == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at error level; its state is reported by
    # /readyz and our own warnings instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL if level != "debug" else logging.DEBUG)
    logging.getLogger("aiohttp.access").setLevel(logging.INFO if access_log else logging.WARNING)

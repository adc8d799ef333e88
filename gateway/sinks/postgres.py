"""The ``postgres`` sink: an audit table with one row per event id.

Rows are inserted with ``ON CONFLICT (event_id) DO NOTHING``, so an event delivered
twice (a retry, a replay, a consumer restart) is stored once. A batch is one INSERT over
``unnest`` of column arrays.

Errors are classified by SQLSTATE class. Connection problems, lack of resources, an
operator's intervention and serialisation conflicts are retriable. Anything else (bad
data, a missing table) is not, because the same row would fail again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import asyncpg
import structlog
from pydantic import PositiveFloat, PositiveInt, field_validator, model_validator

from gateway.envelope import parse_iso_time
from gateway.routing.config import SecretRef
from gateway.routing.match import expected_found
from gateway.sinks.base import DeliveryFailed, RoutedEvent, SinkContext, SinkSettings

log = structlog.get_logger("gateway.sinks.postgres")

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# SQLSTATE classes: 08 connection exception, 40 transaction rollback, 53 insufficient
# resources, 57 operator intervention (such as a server shutting down).
RETRIABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})


class PostgresSettings(SinkSettings):
    dsn: SecretRef
    # "table" or "schema.table"; names are quoted, so they are case-sensitive.
    table: str = "hitl_events"
    create_table: bool = False
    min_connections: PositiveInt = 1
    max_connections: PositiveInt = 4
    connect_timeout_s: PositiveFloat = 10.0
    command_timeout_s: PositiveFloat = 10.0

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(IDENTIFIER.match(part) for part in parts):
            raise ValueError("a table name such as 'hitl_events' or 'audit.hitl_events' (letters, digits, '_')")
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> "PostgresSettings":
        if self.min_connections > self.max_connections:
            raise expected_found(f"min_connections at most max_connections ({self.max_connections})", str(self.min_connections))
        return self


def qualified_table(table: str) -> str:
    return ".".join(f'"{part}"' for part in table.split("."))


def create_table_sql(table: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {qualified_table(table)} (
            event_id    text PRIMARY KEY,
            event_type  text NOT NULL,
            loop_id     text,
            occurred_at timestamptz,
            received_at timestamptz NOT NULL DEFAULT now(),
            topic       text NOT NULL,
            "partition" integer NOT NULL,
            "offset"    bigint NOT NULL,
            event       jsonb NOT NULL
        )
    """


def insert_sql(table: str) -> str:
    return f"""
        INSERT INTO {qualified_table(table)} (event_id, event_type, loop_id, occurred_at, topic, "partition", "offset", event)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::integer[],
                             $7::bigint[], $8::jsonb[])
        ON CONFLICT (event_id) DO NOTHING
    """


class PostgresSink:
    Settings: ClassVar[type[SinkSettings]] = PostgresSettings
    supports_batches: ClassVar[bool] = True

    def __init__(self, settings: PostgresSettings, context: SinkContext) -> None:
        self._settings = settings
        self._context = context
        self._insert_sql = insert_sql(settings.table)
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        if self._pool is not None:
            return
        settings = self._settings
        dsn = settings.dsn.resolve()

        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.min_connections,
                max_size=settings.max_connections,
                timeout=settings.connect_timeout_s,
                command_timeout=settings.command_timeout_s,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # The DSN contains the password, so the message names only where it came from.
            raise DeliveryFailed(
                f"cannot connect to PostgreSQL with the DSN from {settings.dsn} for route {self._context.route!r}: "
                f"{_describe(error)}",
                retriable=True,
            ) from error

        if settings.create_table:
            try:
                await pool.execute(create_table_sql(settings.table))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                await pool.close()
                raise _failure(f"creating table {settings.table}", error) from error
        self._pool = pool
        log.info("postgres_sink_started", route=self._context.route, table=settings.table)

    async def deliver(self, event: RoutedEvent) -> None:
        await self.deliver_batch((event,))

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        if self._pool is None:
            raise RuntimeError(f"the postgres sink of route {self._context.route!r} is used before start()")
        columns = (
            [event.event_id for event in events],
            [event.event_type for event in events],
            [event.loop_id for event in events],
            [parse_iso_time(event.occurred_at) for event in events],
            [event.topic for event in events],
            [event.partition for event in events],
            [event.offset for event in events],
            [event.value.decode("utf-8") for event in events],
        )

        try:
            await self._pool.execute(self._insert_sql, *columns)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise _failure(f"inserting {len(events)} event(s) into {self._settings.table}", error) from error

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> "PostgresSink":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _failure(action: str, error: BaseException) -> DeliveryFailed:
    return DeliveryFailed(f"{action} failed: {_describe(error)}", retriable=_is_retriable(error))


def _is_retriable(error: BaseException) -> bool:
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate[:2] in RETRIABLE_SQLSTATE_CLASSES
    # Lost connections, timeouts and a closed pool: the server may be back soon.
    return True


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncpg.PostgresError):
        return f"{type(error).__name__} ({getattr(error, 'sqlstate', '?')}): {error}"
    return type(error).__name__ + (f": {error.strerror}" if isinstance(error, OSError) and error.strerror else "")

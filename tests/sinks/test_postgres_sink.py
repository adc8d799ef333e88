"""The postgres sink against a real PostgreSQL: idempotent inserts, columns, errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import asyncpg
import orjson
import pytest

from gateway.errors import ConfigError
from gateway.routing.config import SecretRef
from gateway.sinks.base import DeliveryFailed, SinkContext
from gateway.envelope import parse_iso_time
from gateway.sinks.postgres import PostgresSettings, PostgresSink

pytestmark = pytest.mark.postgres

CONTEXT = SinkContext(route="audit", kafka_bootstrap_servers="127.0.0.1:9")
DSN_VARIABLE = "TEST_AUDIT_PG_DSN"


@pytest.fixture
def table() -> str:
    return "audit_" + uuid.uuid4().hex[:10]


@pytest.fixture
async def sink(postgres_dsn: str, table: str, monkeypatch) -> AsyncIterator[PostgresSink]:
    monkeypatch.setenv(DSN_VARIABLE, postgres_dsn)
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), table=table, create_table=True)
    async with PostgresSink(settings, CONTEXT) as started:
        yield started


@pytest.fixture
async def database(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_dsn)
    yield connection
    await connection.close()


async def rows(database: asyncpg.Connection, table: str) -> list[asyncpg.Record]:
    return await database.fetch(f'SELECT * FROM "{table}" ORDER BY "offset"')


async def test_event_delivered_twice_is_stored_once(sink, database, table, make_event) -> None:
    event = make_event("evt-1")

    await sink.deliver(event)
    await sink.deliver(event)

    assert len(await rows(database, table)) == 1


async def test_batch_delivered_twice_is_stored_once(sink, database, table, make_event) -> None:
    batch = [make_event(f"evt-{number}", offset=number) for number in range(5)]

    await sink.deliver_batch(batch)
    await sink.deliver_batch(batch)

    assert [row["event_id"] for row in await rows(database, table)] == [f"evt-{number}" for number in range(5)]


async def test_repeated_event_within_one_batch_is_stored_once(sink, database, table, make_event) -> None:
    await sink.deliver_batch([make_event("evt-1"), make_event("evt-1", offset=1)])

    assert len(await rows(database, table)) == 1


async def test_columns_are_filled(sink, database, table, make_event) -> None:
    event = make_event("evt-9", event_type="request.timed_out", loop_id="loop-4", topic="hitl.request", partition=3, offset=42)

    await sink.deliver(event)

    row = (await rows(database, table))[0]
    assert row["event_id"] == "evt-9"
    assert row["event_type"] == "request.timed_out"
    assert row["loop_id"] == "loop-4"
    assert row["topic"] == "hitl.request"
    assert row["partition"] == 3
    assert row["offset"] == 42


async def test_occurred_at_is_a_timestamp(sink, database, table, make_event) -> None:
    await sink.deliver(make_event(occurred_at="2025-03-01T12:00:00Z"))

    row = (await rows(database, table))[0]
    assert row["occurred_at"] == datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


async def test_received_at_is_set_by_the_database(sink, database, table, make_event) -> None:
    await sink.deliver(make_event())

    row = (await rows(database, table))[0]
    assert row["received_at"] is not None


async def test_event_column_contains_the_value(sink, database, table, make_event) -> None:
    event = make_event()

    await sink.deliver(event)

    row = (await rows(database, table))[0]
    assert orjson.loads(row["event"]) == event.event


async def test_unparseable_occurred_at_is_null(sink, database, table, make_event) -> None:
    await sink.deliver(make_event(occurred_at="yesterday, around noon"))

    row = (await rows(database, table))[0]
    assert row["occurred_at"] is None


async def test_missing_loop_id_is_null(sink, database, table, make_event) -> None:
    await sink.deliver(make_event(loop_id=None))

    row = (await rows(database, table))[0]
    assert row["loop_id"] is None


async def test_data_error_is_not_retriable(sink, make_event) -> None:
    # PostgreSQL's jsonb cannot hold the NUL character.
    event = make_event(body={"event": "request.completed", "note": "\u0000"})

    with pytest.raises(DeliveryFailed) as caught:
        await sink.deliver(event)

    assert caught.value.retriable is False


async def test_table_in_a_schema(postgres_dsn, database, monkeypatch, make_event) -> None:
    schema = "s_" + uuid.uuid4().hex[:10]
    await database.execute(f'CREATE SCHEMA "{schema}"')
    monkeypatch.setenv(DSN_VARIABLE, postgres_dsn)
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), table=f"{schema}.events", create_table=True)

    async with PostgresSink(settings, CONTEXT) as sink:
        await sink.deliver(make_event())

    assert await database.fetchval(f'SELECT count(*) FROM "{schema}"."events"') == 1


async def test_missing_table_without_create_table_is_not_retriable(postgres_dsn, monkeypatch, make_event) -> None:
    monkeypatch.setenv(DSN_VARIABLE, postgres_dsn)
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), table="absent_" + uuid.uuid4().hex[:10])

    async with PostgresSink(settings, CONTEXT) as sink:
        with pytest.raises(DeliveryFailed) as caught:
            await sink.deliver(make_event())

    assert caught.value.retriable is False


async def test_unreachable_server_is_retriable_at_start(monkeypatch) -> None:
    monkeypatch.setenv(DSN_VARIABLE, "postgresql://postgres:topsecret@127.0.0.1:9/postgres")
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), connect_timeout_s=2)

    with pytest.raises(DeliveryFailed) as caught:
        await PostgresSink(settings, CONTEXT).start()

    assert caught.value.retriable is True


async def test_start_error_does_not_show_the_password(monkeypatch) -> None:
    monkeypatch.setenv(DSN_VARIABLE, "postgresql://postgres:topsecret@127.0.0.1:9/postgres")
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), connect_timeout_s=2)

    with pytest.raises(DeliveryFailed) as caught:
        await PostgresSink(settings, CONTEXT).start()

    assert "topsecret" not in str(caught.value)


async def test_missing_dsn_variable_is_a_config_error(monkeypatch) -> None:
    monkeypatch.delenv(DSN_VARIABLE, raising=False)
    settings = PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE))

    with pytest.raises(ConfigError, match=DSN_VARIABLE):
        await PostgresSink(settings, CONTEXT).start()


async def test_start_is_idempotent_and_close_safe_twice(postgres_dsn, database, monkeypatch, table, make_event) -> None:
    monkeypatch.setenv(DSN_VARIABLE, postgres_dsn)
    sink = PostgresSink(PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), table=table, create_table=True), CONTEXT)

    await sink.start()
    await sink.start()
    await sink.deliver(make_event())
    await sink.close()
    await sink.close()

    assert len(await rows(database, table)) == 1


@pytest.mark.parametrize("table_name", ["events; DROP TABLE x", "a.b.c", "1events", "bad-name"])
def test_table_name_must_be_an_identifier(table_name: str) -> None:
    with pytest.raises(ValueError, match="a table name such as"):
        PostgresSettings(dsn=SecretRef(env=DSN_VARIABLE), table=table_name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=timezone.utc)),
        ("2025-03-01T14:00:00+02:00", datetime(2025, 3, 1, 12, tzinfo=timezone.utc)),
        ("2025-03-01T12:00:00", datetime(2025, 3, 1, 12, tzinfo=timezone.utc)),
        ("not a time", None),
        (None, None),
    ],
)
def test_parse_occurred_at(value: str | None, expected: datetime | None) -> None:
    assert parse_iso_time(value) == expected

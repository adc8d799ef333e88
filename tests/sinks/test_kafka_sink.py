"""The kafka sink against the real test broker: same key, value and headers on another topic."""

from __future__ import annotations

import pytest

from gateway.producer import ensure_topics
from gateway.sinks.base import SinkContext
from gateway.sinks.kafka import KafkaSink, KafkaSinkSettings
from tests.kafka_records import read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
async def topic(kafka_bootstrap: str, topic_prefix: str) -> str:
    name = topic_prefix + "copy"
    await ensure_topics(kafka_bootstrap, [name], partitions=1, replication_factor=1)
    return name


def sink_for(topic: str, bootstrap: str, **settings) -> KafkaSink:
    # The router's bootstrap comes from the context; the sink uses it unless it names its own.
    context = SinkContext(route="copy", kafka_bootstrap_servers=bootstrap)
    return KafkaSink(KafkaSinkSettings(topic=topic, **settings), context)


async def test_record_keeps_key(kafka_bootstrap, topic, make_event) -> None:
    async with sink_for(topic, kafka_bootstrap) as sink:
        await sink.deliver(make_event(loop_id="loop-7"))

    records = await read_topic(kafka_bootstrap, topic)
    assert records[0].key == b"loop-7"


async def test_record_keeps_value(kafka_bootstrap, topic, make_event) -> None:
    event = make_event()

    async with sink_for(topic, kafka_bootstrap) as sink:
        await sink.deliver(event)

    records = await read_topic(kafka_bootstrap, topic)
    assert records[0].value == event.value


async def test_record_keeps_headers(kafka_bootstrap, topic, make_event) -> None:
    event = make_event("evt-3")

    async with sink_for(topic, kafka_bootstrap) as sink:
        await sink.deliver(event)

    records = await read_topic(kafka_bootstrap, topic)
    assert list(records[0].headers) == list(event.headers)


async def test_batch_is_written_in_order(kafka_bootstrap, topic, make_event) -> None:
    events = [make_event(f"evt-{number}") for number in range(20)]

    async with sink_for(topic, kafka_bootstrap) as sink:
        await sink.deliver_batch(events)

    records = await read_topic(kafka_bootstrap, topic)
    assert [record.value for record in records] == [event.value for event in events]


async def test_own_bootstrap_servers_win_over_the_routers(kafka_bootstrap, topic, make_event) -> None:
    context = SinkContext(route="copy", kafka_bootstrap_servers="127.0.0.1:9")
    sink = KafkaSink(KafkaSinkSettings(topic=topic, bootstrap_servers=kafka_bootstrap), context)

    async with sink:
        await sink.deliver(make_event())

    assert len(await read_topic(kafka_bootstrap, topic)) == 1


async def test_start_is_idempotent_and_close_safe_twice(kafka_bootstrap, topic, make_event) -> None:
    sink = sink_for(topic, kafka_bootstrap)

    await sink.start()
    await sink.start()
    await sink.deliver(make_event())
    await sink.close()
    await sink.close()

    assert len(await read_topic(kafka_bootstrap, topic)) == 1


async def test_create_topic_makes_missing_topic(kafka_bootstrap, topic_prefix, make_event) -> None:
    name = topic_prefix + "created-by-sink"

    async with sink_for(name, kafka_bootstrap, create_topic=True, partitions=2) as sink:
        await sink.deliver(make_event(loop_id="loop-1"))

    records = await read_topic(kafka_bootstrap, name)
    assert [record.key for record in records] == [b"loop-1"]

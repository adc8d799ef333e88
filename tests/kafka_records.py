"""Read back what a test produced to the real broker."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


async def read_topic(bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0) -> list[ConsumerRecord]:
    """Return every record in ``topic`` up to its end offsets at call time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        # Without a group, subscribe assigns every partition of the topic once the
        # consumer has its metadata.
        consumer.subscribe([topic])
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topic {topic} has no partitions after {timeout_s} s; was it created?")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        end_offsets = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)

        records: list[ConsumerRecord] = []
        while not await _reached(consumer, end_offsets):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets {end_offsets} in {timeout_s} s")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, end_offsets: dict) -> bool:
    for partition, end in end_offsets.items():
        if await consumer.position(partition) < end:
            return False
    return True

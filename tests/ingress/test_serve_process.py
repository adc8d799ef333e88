"""``hitl-gateway serve`` and ``send-test`` as separate processes, as a user runs them."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.samples import sample_body
from gateway.signatures import sign_hitl
from tests.kafka_records import read_topic

SECRET = "process-test-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def gateway_env(kafka_bootstrap, topic_prefix, tmp_path) -> dict[str, str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(f'kafka:\n  topic_prefix: "{topic_prefix}"\n  partitions: 2\nlogging:\n  format: json\n')
    return {
        **os.environ,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "GATEWAY_HTTP_PORT": str(free_port()),
        "HITL_WEBHOOK_SECRETS": f"old-secret,{SECRET}",
    }


async def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    log_path = Path(env["GATEWAY_CONFIG"]).with_suffix(".log")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
    base_url = f"http://127.0.0.1:{env['GATEWAY_HTTP_PORT']}"
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}: {log_path.read_text()}")
            try:
                async with session.get(base_url + "/readyz") as response:
                    if response.status == 200:
                        return process, base_url
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
    process.kill()
    raise AssertionError("serve did not become ready within 30 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_send_test_reaches_kafka(gateway_env, kafka_bootstrap, topic_prefix):
    process, base_url = await start_serve(gateway_env)
    try:
        result = await asyncio.to_thread(
            cli, "send-test", "--url", base_url + "/webhooks/hitl", "--secret", SECRET, "--event", "request.completed", env=gateway_env
        )
    finally:
        stop(process)

    assert result.returncode == 0, result.stderr
    assert "HTTP 200" in result.stderr
    answer = orjson.loads(result.stdout)
    assert answer["status"] == "accepted"
    assert answer["topic"] == f"{topic_prefix}request"
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}request")
    assert [dict(record.headers)["ce_type"] for record in records] == [b"request.completed"]
    assert process.returncode == 0


async def test_send_test_with_wrong_secret_fails(gateway_env):
    process, base_url = await start_serve(gateway_env)
    try:
        result = await asyncio.to_thread(cli, "send-test", "--url", base_url + "/webhooks/hitl", "--secret", "wrong", env=gateway_env)
    finally:
        stop(process)

    assert result.returncode == 1
    assert "HTTP 401" in result.stderr
    assert orjson.loads(result.stdout)["error"] == "invalid_signature"


async def test_send_test_file_sent_byte_for_byte(gateway_env, kafka_bootstrap, topic_prefix, tmp_path):
    body_file = tmp_path / "loop.json"
    body_file.write_bytes('{"event":"loop.created","data":{"loop":{"id":"L-ü"}}}\n'.encode())
    process, base_url = await start_serve(gateway_env)
    try:
        result = await asyncio.to_thread(
            cli, "send-test", "--url", base_url + "/webhooks/hitl", "--secret", SECRET, "--file", str(body_file), env=gateway_env
        )
    finally:
        stop(process)

    assert result.returncode == 0, result.stdout + result.stderr
    records = await read_topic(kafka_bootstrap, f"{topic_prefix}loop")
    assert [record.value for record in records] == [body_file.read_bytes()]
    assert records[0].key == "L-ü".encode()


def test_serve_without_secret_refuses_to_start(gateway_env):
    env = {**gateway_env, "HITL_WEBHOOK_SECRETS": ""}
    result = cli("serve", env=env)
    assert result.returncode == 2
    assert "no webhook secret configured" in result.stderr


def test_serve_port_in_use(gateway_env):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", int(gateway_env["GATEWAY_HTTP_PORT"])))
        occupant.listen()
        result = cli("serve", env=gateway_env)

    assert result.returncode == 2
    assert f"http.port: cannot bind 127.0.0.1:{gateway_env['GATEWAY_HTTP_PORT']}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_invalid_config_names_key_and_line(gateway_env, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("http:\n  port: 8080\nkafka:\n  partitions: many\n")
    result = cli("serve", "--config", str(config), env=gateway_env)
    assert result.returncode == 2
    assert f"{config}:4: kafka.partitions: expected a valid integer" in result.stderr
    assert "found 'many'" in result.stderr


async def test_acknowledged_events_survive_gateway_kill(gateway_env, kafka_bootstrap, topic_prefix):
    """SIGKILL the gateway mid-stream: every event that got a 200 response is in Kafka."""
    process, base_url = await start_serve(gateway_env)
    bodies = [sample_body("request.created", loop_id=f"loop-{number % 7}") for number in range(400)]
    acknowledged: list[bytes] = []

    async def deliver(session: aiohttp.ClientSession, body: bytes) -> None:
        headers = {"X-HITL-Signature": sign_hitl(body, SECRET)}
        try:
            async with session.post(base_url + "/webhooks/hitl", data=body, headers=headers) as response:
                if response.status == 200:
                    acknowledged.append(body)
        except aiohttp.ClientError:
            pass

    async def kill_soon() -> None:
        while len(acknowledged) < 50:
            await asyncio.sleep(0.005)
        process.send_signal(signal.SIGKILL)

    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=connector) as session:
        killer = asyncio.create_task(kill_soon())
        await asyncio.gather(*(deliver(session, body) for body in bodies))
        await asyncio.wait_for(killer, timeout=30)
    process.wait(timeout=10)

    assert process.returncode == -signal.SIGKILL
    assert 50 <= len(acknowledged) < len(bodies)
    stored = {record.value for record in await read_topic(kafka_bootstrap, f"{topic_prefix}request")}
    missing = [body for body in acknowledged if body not in stored]
    assert missing == []

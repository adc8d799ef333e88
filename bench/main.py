"""Run the benchmark and write a Markdown report under bench/results/.

Started by ``bench/run``, which installs wrk and redis-server and starts the benchmark's
own Kafka broker; see bench/README.md. Every figure comes from the real local broker
with acks=all and the idempotent producer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench import measure, profile, report
from bench.corpus import write_corpus
from bench.redis_server import RedisServer, free_port
from bench.servers import EmptyServer, GatewayServer

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret"
TOPIC_PREFIX = "bench."
PERF_TOPIC = "bench.perf-test"
PARTITIONS = 6
WARMUP_S = 2.0
WRK_CONNECTIONS = 256
# Above the fastest accepted rate seen here, so that a saturation run never wraps around.
CORPUS_REQUESTS_PER_S = 12_000


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.smoke = args.smoke
        self.duration_s = args.duration_s
        self.workers = args.workers
        self.started = datetime.now(UTC)
        self.work = REPO / ".run" / f"bench-{self.started:%Y%m%d-%H%M%S}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.work / "redis")
        self.results: dict = {"notes": []}

    def run(self) -> Path:
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.results["started"] = self.started.isoformat(timespec="seconds")
        self.results["machine"] = measure.machine()
        self.results["versions"] = measure.versions(self.args.kafka_version)
        self.results["load"] = self._write_corpora()
        self.results["settings"] = self._settings_shown()
        self.results["load_average_at_start"] = os.getloadavg()[0]

        self.redis.start()
        asyncio.run(_create_topics(self.args.bootstrap))
        try:
            # The broker ceiling goes first: it also warms up the broker's JIT.
            self._step("broker ceiling", self._measure_broker)
            self._step("HTTP ceiling", self._measure_ceilings)
            self._step("gateway saturation", self._measure_saturation)
            self._step("fixed rates", self._measure_fixed_rates)
            self._step("peer", self._measure_peer)
            self._step("memory per id", self._measure_memory)
            self._step("router", self._measure_router)
            if not self.smoke and not self.args.no_profile:
                self._step("profile", self._measure_profile)
            if self.args.sweep_linger:
                self._step("linger sweep", self._sweep_linger)
        finally:
            self.redis.stop()

        self.results["load_average_at_end"] = os.getloadavg()[0]
        self.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        path = self._write_report()
        # The corpora take hundreds of MB; a failed run keeps them with the servers' logs.
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return path

    def _step(self, name: str, measure_step) -> None:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        measure_step()
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ load

    def _write_corpora(self) -> dict:
        # Enough distinct deliveries that the fastest run does not wrap around.
        requests = 20_000 if self.smoke else max(60_000, int((self.duration_s + WARMUP_S) * CORPUS_REQUESTS_PER_S))
        self.corpus = self.work / "corpus.bin"
        stats = write_corpus(
            self.corpus, requests=requests, secret=SECRET, loops=self.args.loops, duplicate_share=self.args.duplicate_share
        )
        self.warmup_corpus = self.work / "warmup.bin"
        write_corpus(self.warmup_corpus, requests=2000, secret=SECRET, loops=50, duplicate_share=0.0, seed=11)
        return {**asdict(stats), "duplicate_share": self.args.duplicate_share}

    def _settings_shown(self) -> dict:
        from gateway.settings import GatewaySettings

        kafka = GatewaySettings.model_validate({"kafka": self._kafka_settings()}).kafka
        return {
            "workers": self.workers,
            "duration_s": self.duration_s,
            "warmup_s": WARMUP_S,
            "wrk_connections": WRK_CONNECTIONS,
            "linger_ms": kafka.linger_ms,
            "max_batch_bytes": kafka.max_batch_bytes,
            "compression": kafka.compression,
            "produce_timeout_s": kafka.produce_timeout_s,
            "partitions": PARTITIONS,
            "acks": "all",
            "idempotence": True,
        }

    def _kafka_settings(self) -> dict:
        kafka = {"bootstrap_servers": self.args.bootstrap, "topic_prefix": TOPIC_PREFIX, "partitions": PARTITIONS}
        if self.args.linger_ms is not None:
            kafka["linger_ms"] = self.args.linger_ms
        return kafka

    def _gateway(self, name: str, workers: int, backend: str, linger_ms: int | None = None) -> GatewayServer:
        kafka = self._kafka_settings()
        if linger_ms is not None:
            kafka["linger_ms"] = linger_ms
        settings = {
            "http": {"host": "127.0.0.1", "port": free_port()},
            "kafka": kafka,
            "dedup": {"backend": backend, "redis": {"url": self.redis.url}},
            "logging": {"format": "json", "level": "info"},
        }
        self.redis.command("FLUSHALL")
        return GatewayServer(self.work / name, settings, workers, SECRET)

    # ------------------------------------------------------------------ steps

    def _measure_ceilings(self) -> None:
        ceilings = {}
        for workers in sorted({1, self.workers}):
            server = EmptyServer(free_port(), workers)
            server.start()
            try:
                cpu_before = measure.total_cpu_seconds(server.pids)
                result = self._wrk(server.port, self.duration_s)
                cpu_s = measure.total_cpu_seconds(server.pids) - cpu_before
            finally:
                server.stop()
            ceilings[workers] = {
                "requests_per_s": result.requests_per_s,
                "errors": result.non_2xx + result.socket_errors,
                "cpu_us_per_request": _per_event_us(cpu_s, result.requests),
            }
        self.results["ceilings"] = ceilings

    def _measure_saturation(self) -> None:
        runs = [("1 worker, in-memory store", 1, "memory")]
        if not self.smoke:
            runs.append(("1 worker, Redis store", 1, "redis"))
        if self.workers > 1:
            runs.append((f"{self.workers} workers, Redis store", self.workers, "redis"))
        self.results["saturation"] = [self._saturate(*run) for run in runs]

    def _saturate(self, label: str, workers: int, backend: str, linger_ms: int | None = None) -> dict:
        gateway = self._gateway(f"saturation-{workers}-{backend}-{linger_ms}", workers, backend, linger_ms)
        gateway.start()
        try:
            pids = gateway.worker_pids()
            wrk = self._start_wrk(gateway.port, WARMUP_S + self.duration_s)
            time.sleep(WARMUP_S)
            before = self._snapshot(gateway, pids)
            time.sleep(self.duration_s)
            after = self._snapshot(gateway, pids)
            result = self._finish_wrk(wrk)
            peak_rss = [measure.peak_rss_bytes(pid) for pid in pids]
        finally:
            gateway.stop()

        window_s = after["time"] - before["time"]
        accepted = after["accepted"] - before["accepted"]
        return {
            "label": label,
            "workers": workers,
            "backend": backend,
            "accepted_per_s": accepted / window_s,
            "duplicates_per_s": (after["duplicates"] - before["duplicates"]) / window_s,
            "requests_per_s": result.requests_per_s,
            "errors": result.non_2xx + result.socket_errors,
            "wrk_latency_ms": result.latency_ms,
            "gateway_cpu_us_per_event": _per_event_us(after["gateway_cpu"] - before["gateway_cpu"], accepted),
            "redis_cpu_us_per_event": _per_event_us(after["redis_cpu"] - before["redis_cpu"], accepted) if backend == "redis" else None,
            "broker_cpu_us_per_event": _per_event_us(after["broker_cpu"] - before["broker_cpu"], accepted),
            "peak_rss_mib_per_worker": round(max(peak_rss) / 2**20, 1),
        }

    def _snapshot(self, gateway: GatewayServer, pids: list[int]) -> dict:
        accepted, duplicates = measure.accepted_and_duplicates(gateway.port)
        return {
            "time": time.monotonic(),
            "accepted": accepted,
            "duplicates": duplicates,
            "gateway_cpu": measure.total_cpu_seconds(pids),
            "redis_cpu": measure.total_cpu_seconds([self.redis.pid]),
            "broker_cpu": measure.total_cpu_seconds([self._broker_pid()] if self._broker_pid() else []),
        }

    def _sweep_linger(self) -> None:
        """Saturation and latency at 1,000 events/s for each kafka.linger_ms value asked for."""
        runs = []
        for linger_ms in self.args.sweep_linger:
            saturation = self._saturate(f"linger_ms {linger_ms}", self.workers, "redis", linger_ms)
            gateway = self._gateway(f"sweep-{linger_ms}", self.workers, "redis", linger_ms)
            gateway.start()
            try:
                self._loadgen(gateway.port, 1000, 1.0, self.warmup_corpus)
                latency = self._loadgen(gateway.port, 1000, self.duration_s, self.corpus)
            finally:
                gateway.stop()
            runs.append({"linger_ms": linger_ms, "accepted_per_s": saturation["accepted_per_s"], "at_1000": latency})
        self.results["linger_sweep"] = runs

    def _measure_fixed_rates(self) -> None:
        saturation = self.results["saturation"][-1]["requests_per_s"]
        rates = [200] if self.smoke else [1000, 5000, max(100, int(saturation * 0.7 / 100) * 100)]
        runs = []
        for rate in rates:
            gateway = self._gateway(f"fixed-{rate}", self.workers, "redis")
            gateway.start()
            try:
                self._loadgen(gateway.port, 500 if self.smoke else 1000, 1.0, self.warmup_corpus)
                result = self._loadgen(gateway.port, rate, self.duration_s, self.corpus)
            finally:
                gateway.stop()
            runs.append({"rate_per_s": rate, "share_of_saturation": rate / saturation if saturation else None, **result})
        self.results["fixed_rates"] = runs

    def _measure_broker(self) -> None:
        record_bytes = self.results["load"]["mean_body_bytes"]
        linger_ms = self.results["settings"]["linger_ms"]
        saturation_records = 5000 if self.smoke else 200_000
        fixed_records = 1000 if self.smoke else int(5000 * self.duration_s)
        self.results["broker"] = {
            "record_bytes": record_bytes,
            "saturation": self._perf_test(saturation_records, -1, record_bytes, linger_ms),
            "fixed_5000": self._perf_test(fixed_records, 500 if self.smoke else 5000, record_bytes, linger_ms),
        }

    def _measure_peer(self) -> None:
        for name in ("redpanda-connect", "benthos"):
            if shutil.which(name):
                self.results["peer"] = self._run_peer(name)
                return
        self.results["peer"] = None
        self.results["notes"].append(
            "Peer skipped: neither redpanda-connect nor benthos is on PATH, and Debian packages neither. "
            "bench/peer/redpanda-connect.yaml is the pipeline to run when one is installed."
        )

    def _run_peer(self, executable: str) -> dict:
        port = free_port()
        environment = {
            **os.environ,
            "PEER_HTTP_ADDRESS": f"127.0.0.1:{port}",
            "PEER_KAFKA_BROKERS": self.args.bootstrap,
            "PEER_SECRET": SECRET,
            "PEER_REDIS_URL": self.redis.url,
        }
        process = subprocess.Popen(
            [executable, "run", str(REPO / "bench" / "peer" / "redpanda-connect.yaml")],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            from bench.servers import wait_for_port

            wait_for_port(port)
            result = self._wrk(port, self.duration_s)
        finally:
            process.terminate()
            process.wait(timeout=30)
        return {"name": executable, "requests_per_s": result.requests_per_s, "errors": result.non_2xx + result.socket_errors}

    def _measure_router(self) -> None:
        from bench.router_bench import router_benchmark

        events = 300 if self.smoke else 20_000
        route_counts = (1, 4)
        self.results["router"] = asyncio.run(router_benchmark(self.work, self.args.bootstrap, events, route_counts))

    def _measure_memory(self) -> None:
        count = 20_000 if self.smoke else 200_000
        self.results["memory"] = {
            "ids": count,
            "memory_store_bytes_per_id": asyncio.run(_memory_store_bytes_per_id(count)),
            "redis_bytes_per_id": self._redis_bytes_per_id(count // 4),
        }

    def _redis_bytes_per_id(self, count: int) -> float:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        client.flushall()
        before = client.info("memory")["used_memory"]
        pipeline = client.pipeline(transaction=False)
        for _ in range(count):
            # The key and value the Redis store writes for one delivered event.
            key = b"hitl-gateway:dedup:sha256:" + os.urandom(32).hex().encode()
            pipeline.set(key, b"d:3:1234567:hitl.request", px=86_400_000)
            if len(pipeline) >= 1000:
                pipeline.execute()
        pipeline.execute()
        used = client.info("memory")["used_memory"] - before
        client.flushall()
        client.close()
        return used / count

    def _measure_profile(self) -> None:
        if profile.py_spy() is None:
            self.results["notes"].append("Profile skipped: py-spy is not installed (pip install py-spy).")
            return
        gateway = self._gateway("profile", self.workers, "redis")
        gateway.start()
        try:
            pid = gateway.worker_pids()[0]
            sample_s = max(3, int(self.duration_s) - 2)
            wrk = self._start_wrk(gateway.port, sample_s + 3)
            time.sleep(1.5)
            collapsed = profile.record(pid, sample_s, self.work / "profile.txt")
            self._finish_wrk(wrk)
        finally:
            gateway.stop()
        shutil.copy(collapsed, self.args.out / f"{self.started:%Y%m%d-%H%M%S}-profile.txt")
        self.results["profile"] = profile.breakdown(collapsed)

    # ------------------------------------------------------------------ tools

    def _wrk(self, port: int, duration_s: float) -> measure.WrkResult:
        return self._finish_wrk(self._start_wrk(port, duration_s))

    def _start_wrk(self, port: int, duration_s: float) -> subprocess.Popen:
        environment = {**os.environ, "BENCH_CORPUS": str(self.corpus), "BENCH_THREADS": "1"}
        return subprocess.Popen(
            ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(duration_s))}s", "--latency", "--timeout", "5s",
             "-s", str(REPO / "bench" / "corpus.lua"), f"http://127.0.0.1:{port}/webhooks/hitl"],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _finish_wrk(self, process: subprocess.Popen) -> measure.WrkResult:
        output, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}")
        return measure.parse_wrk(output)

    def _loadgen(self, port: int, rate: float, duration_s: float, corpus: Path) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--rate", str(rate),
             "--duration-s", str(duration_s), "--corpus", str(corpus), "--connections", "512"],
            capture_output=True,
            text=True,
            timeout=duration_s + 120,
            cwd=REPO,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench.loadgen failed ({result.returncode}):\n{result.stderr}")
        return orjson.loads(result.stdout)

    def _perf_test(self, records: int, throughput: int, record_bytes: int, linger_ms: int) -> dict:
        command = [
            "bash", str(REPO / "deploy" / "kafka.sh"), "perf-test",
            "--topic", PERF_TOPIC, "--num-records", str(records), "--record-size", str(record_bytes),
            "--throughput", str(throughput), "--producer-props", f"bootstrap.servers={self.args.bootstrap}",
            "acks=all", "enable.idempotence=true", f"linger.ms={linger_ms}", "batch.size=262144",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"deploy/kafka.sh perf-test failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return {"records": records, "throughput_limit": throughput, **measure.parse_perf_test(result.stdout)}

    def _broker_pid(self) -> int | None:
        if self.args.kafka_pid_file is None:
            return None
        try:
            return int(Path(self.args.kafka_pid_file).read_text().strip())
        except (OSError, ValueError):
            return None

    def _write_report(self) -> Path:
        stem = f"{self.started:%Y%m%d-%H%M%S}" + ("-smoke" if self.smoke else "")
        (self.args.out / f"{stem}.json").write_bytes(orjson.dumps(self.results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        path = self.args.out / f"{stem}.md"
        path.write_text(report.render(self.results))
        return path


async def _create_topics(bootstrap: str) -> None:
    from gateway.producer import ensure_topics
    from gateway.settings import KafkaSettings

    families = KafkaSettings().families + [KafkaSettings().fallback_family]
    await ensure_topics(bootstrap, [TOPIC_PREFIX + family for family in families] + [PERF_TOPIC], PARTITIONS, 1)


async def _memory_store_bytes_per_id(count: int) -> float:
    """Python heap growth per delivered id in the in-memory store, ids shaped as the default sha256 ids."""
    from gateway.dedup import Receipt
    from gateway.dedup.memory import MemoryDedupStore

    store = MemoryDedupStore(max_entries=count + 1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for number in range(count):
        event_id = "sha256:" + os.urandom(32).hex()
        await store.claim(event_id)
        await store.complete(event_id, Receipt("hitl.request", number % 6, number))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / count


def _per_event_us(cpu_s: float, events: float) -> float | None:
    return round(cpu_s / events * 1e6, 1) if events else None


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the gateway against its limits. Run it through bench/run.")
    parser.add_argument("--bootstrap", required=True, help="the benchmark broker, host:port")
    parser.add_argument("--kafka-pid-file", help="the broker's pid file, to measure its CPU")
    parser.add_argument("--kafka-version", default="unknown")
    parser.add_argument("--workers", type=int, default=2, help="workers of the multi-worker runs (default: 2)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="length of each measured run (default: 10)")
    parser.add_argument("--duplicate-share", type=float, default=0.05, help="share of duplicate deliveries (default: 0.05)")
    parser.add_argument("--loops", type=int, default=1000, help="distinct loop ids in the load (default: 1000)")
    parser.add_argument("--linger-ms", type=int, default=None, help="kafka.linger_ms of the gateway (default: its default)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--sweep-linger",
        type=lambda text: [int(value) for value in text.split(",")],
        default=None,
        metavar="MS,MS,...",
        help="also measure these kafka.linger_ms values (saturation and latency at 1,000 events/s)",
    )
    parser.add_argument("--keep-work", action="store_true", help="keep .run/bench-<time> (corpora, server logs) after a run")
    parser.add_argument("--smoke", action="store_true", help="tiny counts and short runs, to check that the benchmark works")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="report directory (default: bench/results)")
    args = parser.parse_args()
    if args.smoke:
        args.duration_s = min(args.duration_s, 2.0)
    # aiokafka logs every retry of a produce to a topic created a moment ago.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)

    path = Benchmark(args).run()
    print(path)


if __name__ == "__main__":
    main()

"""Readings of the machine, of /proc and of the tools that the benchmark runs."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from importlib import metadata

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # The command name in field 2 may contain spaces; fields after it are fixed.
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def peak_rss_bytes(pid: int) -> int:
    """Return the process's peak resident set size (VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def total_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except FileNotFoundError:
            pass
    return total


def scrape_counters(port: int) -> dict[str, float]:
    """Read the gateway's /metrics and return each counter sample by its name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


def accepted_and_duplicates(port: int) -> tuple[float, float]:
    samples = scrape_counters(port)
    return (
        samples.get('hitl_gateway_requests_total{outcome="accepted"}', 0.0),
        samples.get('hitl_gateway_requests_total{outcome="duplicate"}', 0.0),
    )


@dataclass
class WrkResult:
    requests: int
    requests_per_s: float
    non_2xx: int
    socket_errors: int
    latency_ms: dict[str, float]


def parse_wrk(output: str) -> WrkResult:
    def number(pattern: str, default: float = 0.0) -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else default

    socket_errors = 0
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if found:
        socket_errors = sum(int(group) for group in found.groups())
    latency = {}
    for percent, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE):
        latency[f"p{percent}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return WrkResult(
        requests=int(number(r"(\d+) requests in")),
        requests_per_s=number(r"Requests/sec:\s+([\d.]+)"),
        non_2xx=int(number(r"Non-2xx or 3xx responses: (\d+)")),
        socket_errors=socket_errors,
        latency_ms=latency,
    )


def parse_perf_test(output: str) -> dict[str, float]:
    """Read the summary line of Kafka's ProducerPerformance (the last line with 'records sent')."""
    lines = [line for line in output.splitlines() if "records sent" in line]
    if not lines:
        raise RuntimeError(f"kafka-producer-perf-test printed no summary; its output was:\n{output[-2000:]}")
    line = lines[-1]
    fields = {
        "records": r"(\d+) records sent",
        "records_per_s": r"([\d.]+) records/sec",
        "mb_per_s": r"\(([\d.]+) MB/sec\)",
        "avg_ms": r"([\d.]+) ms avg latency",
        "max_ms": r"([\d.]+) ms max latency",
        "p50": r"(\d+) ms 50th",
        "p95": r"(\d+) ms 95th",
        "p99": r"(\d+) ms 99th",
        "p99.9": r"(\d+) ms 99.9th",
    }
    result = {}
    for name, pattern in fields.items():
        found = re.search(pattern, line)
        if found:
            result[name] = float(found.group(1))
    return result


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = "unknown"
    try:
        with open("/proc/meminfo") as meminfo:
            memory_gib = f"{int(meminfo.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(kafka_version: str) -> dict[str, str]:
    found = {name: _package_version(name) for name in ("aiohttp", "aiokafka", "uvloop", "redis", "orjson", "prometheus-client", "hiredis")}
    found["redis-server"] = _command_version(["redis-server", "--version"], r"v=(\S+)")
    found["wrk"] = _command_version(["wrk", "--version"], r"wrk (\S+)")
    found["kafka"] = kafka_version
    found["java"] = _command_version(["java", "-version"], r'version "([^"]+)"')
    return found


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_version(command: list[str], pattern: str) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    found = re.search(pattern, result.stdout + result.stderr)
    return found.group(1) if found else "unknown"

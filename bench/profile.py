"""A worker's CPU by part of the request path, from py-spy samples of that worker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Checked from the innermost frame outwards; the first part that matches owns the sample.
PARTS = (
    ("signature check (HMAC-SHA256)", ("gateway/signatures.py", "hmac.py")),
    ("envelope parse (orjson, id hash)", ("gateway/envelope.py",)),
    ("dedup store (in-memory, or redis-py and Lua scripts)", ("redis/", "gateway/dedup/")),
    ("Kafka producer (aiokafka)", ("aiokafka/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("logging (structlog, logging)", ("structlog/", "logging/")),
)
# Used only when no part above is on the stack.
FALLBACK_PARTS = (
    ("gateway handler code", ("gateway/ingress.py", "gateway/producer.py", "gateway/app.py")),
    ("HTTP server (aiohttp, multidict, yarl)", ("aiohttp/", "multidict/", "yarl/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop")),
)


def py_spy() -> str | None:
    """Return the py-spy executable beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(pid: int, duration_s: int, output: Path, rate_hz: int = 250) -> Path:
    """Sample ``pid`` for ``duration_s`` seconds into a collapsed-stack file."""
    executable = py_spy()
    if executable is None:
        raise FileNotFoundError("py-spy is not installed; run .venv/bin/pip install py-spy")
    subprocess.run(
        [executable, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate_hz),
         "--format", "raw", "--output", str(output), "--nonblocking"],
        check=True,
        capture_output=True,
        timeout=duration_s + 30,
    )
    return output


def breakdown(collapsed: Path) -> list[tuple[str, float]]:
    """Return (part, share of samples) pairs, largest first, from a py-spy raw file."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        counts[_part_of(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return [(part, count / total) for part, count in counts.most_common()]


def _part_of(frames: list[str]) -> str:
    for parts in (PARTS, FALLBACK_PARTS):
        for frame in reversed(frames):
            for name, markers in parts:
                if any(marker in frame for marker in markers):
                    return name
    return "other"

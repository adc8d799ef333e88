"""The routing-file watcher without a router: when it reloads, and what it counts."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.errors import ConfigError
from gateway.routing.metrics import RouterMetrics
from gateway.routing.reload import ConfigWatcher
from gateway.routing.replay import parse_timestamp
from gateway.envelope import parse_iso_time
from gateway.routing.stale import StaleTracker


class Applied:
    def __init__(self) -> None:
        self.configs: list[str] = []

    async def __call__(self, config: SimpleNamespace) -> None:
        self.configs.append(config.text)


def load_text(path: Path) -> SimpleNamespace:
    """Stand in for load_routing_config: the file's text, and no routes."""
    text = path.read_text()
    if "invalid" in text:
        raise ConfigError(f"{path}:1: routes: expected a list")
    return SimpleNamespace(text=text, routes=[])


def reloads(metrics: RouterMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("hitl_router_config_reloads_total", {"result": result})


@pytest.fixture
async def watched(tmp_path: Path):
    path = tmp_path / "routes.yaml"
    path.write_text("version 1")
    metrics, applied = RouterMetrics(), Applied()
    watcher = ConfigWatcher(path, applied, metrics, loader=load_text)
    await watcher.start()
    yield path, watcher, metrics, applied
    await watcher.stop()
    await watcher.stop()


def bump_mtime(path: Path) -> None:
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))


async def test_watcher_ignores_touched_file(watched) -> None:
    path, watcher, metrics, applied = watched
    assert await watcher.check() is None
    bump_mtime(path)
    assert await watcher.check() is None
    assert applied.configs == []


async def test_watcher_applies_changed_file(watched) -> None:
    path, watcher, metrics, applied = watched
    path.write_text("version 2")
    bump_mtime(path)

    assert await watcher.check() is True
    assert applied.configs == ["version 2"]
    assert reloads(metrics, "success") == 1


async def test_watcher_rejects_invalid_file(watched) -> None:
    path, watcher, metrics, applied = watched
    path.write_text("invalid")
    bump_mtime(path)

    assert await watcher.check() is False
    assert await watcher.check() is None
    assert applied.configs == []
    assert reloads(metrics, "failure") == 1


async def test_watcher_forced_reload(watched) -> None:
    path, watcher, metrics, applied = watched
    assert await watcher.check(force=True) is True
    assert applied.configs == ["version 1"]


async def test_watcher_missing_file(watched) -> None:
    path, watcher, metrics, applied = watched
    path.unlink()
    assert await watcher.check() is None
    assert await watcher.check() is None
    assert reloads(metrics, "failure") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00Z", "2025-03-01T12:00:00+00:00"),
        ("2025-03-01T12:00:00", "2025-03-01T12:00:00+00:00"),
        ("2025-03-01T13:00:00+01:00", "2025-03-01T13:00:00+01:00"),
        ("1740830400", "2025-03-01T12:00:00+00:00"),
        ("1740830400.5", "2025-03-01T12:00:00.500000+00:00"),
    ],
)
def test_timestamp_iso_and_unix(text: str, expected: str) -> None:
    assert parse_timestamp(text).isoformat() == expected


def test_timestamp_invalid_text() -> None:
    with pytest.raises(ConfigError, match="ISO 8601 .* Unix seconds"):
        parse_timestamp("yesterday")


def test_stale_tracker_lru_bound() -> None:
    tracker = StaleTracker(max_requests=2)
    tracker.record("r1", parse_iso_time("2025-03-01T12:00:00Z"))
    tracker.record("r2", parse_iso_time("2025-03-01T12:00:00Z"))
    tracker.newest("r1")
    tracker.record("r3", parse_iso_time("2025-03-01T12:00:00Z"))

    assert len(tracker) == 2
    assert tracker.newest("r2") is None
    assert tracker.newest("r1") is not None

"""Apply a changed routing file to the running router.

The watcher polls the file's modification time and size every ``interval_s``, and on a
change compares a SHA-256 of its bytes, so touching the file or rewriting it unchanged
does nothing. SIGHUP (``request_reload``) reloads at once, changed or not. A file that
fails validation, or whose new sinks do not start, is not applied: the last good
configuration stays active, and the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from gateway.errors import ConfigError
from gateway.routing.config import RoutingConfig, load_routing_config
from gateway.routing.metrics import RouterMetrics

log = structlog.get_logger("gateway.routing.reload")

Fingerprint = tuple[int, int, int]


class ConfigWatcher:
    def __init__(
        self,
        path: str | Path,
        apply: Callable[[RoutingConfig], Awaitable[None]],
        metrics: RouterMetrics,
        *,
        interval_s: float = 1.0,
        loader: Callable[[Path], RoutingConfig] = load_routing_config,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._metrics = metrics
        self._interval_s = interval_s
        self._loader = loader
        self._fingerprint: Fingerprint | None = None
        self._digest: str | None = None
        self._requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._missing_reported = False

    async def start(self) -> None:
        """Remember the file as it is now (the configuration already running) and start watching."""
        if self._task is not None:
            return
        self._fingerprint = self._stat()
        self._digest = self._read_digest()
        self._task = asyncio.create_task(self._watch(), name="routing file watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def request_reload(self) -> None:
        """Reload at the next opportunity even when the file looks unchanged (SIGHUP)."""
        self._requested.set()

    async def check(self, *, force: bool = False) -> bool | None:
        """Reload when the file changed (or ``force``); True applied, False rejected, None nothing to do."""
        fingerprint = self._stat()
        if fingerprint is None:
            if not self._missing_reported or force:
                self._missing_reported = True
                self._count_failure(f"cannot read {self.path}: the file is missing; the running routes stay active")
            return False if force else None
        self._missing_reported = False
        if not force and fingerprint == self._fingerprint:
            return None
        self._fingerprint = fingerprint

        digest = self._read_digest()
        if not force and digest == self._digest:
            return None
        self._digest = digest
        return await self._load_and_apply()

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._requested.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass
            forced = self._requested.is_set()
            self._requested.clear()
            try:
                await self.check(force=forced)
            except Exception:
                # The watcher must outlive any single bad reload.
                log.exception("config_watch_error", path=str(self.path))

    async def _load_and_apply(self) -> bool:
        try:
            config = self._loader(self.path)
            await self._apply(config)
        except ConfigError as error:
            self._count_failure(str(error))
            return False
        self._metrics.config_reloads.labels(result="success").inc()
        log.info("config_reloaded", path=str(self.path), routes=[route.name for route in config.routes])
        return True

    def _count_failure(self, reason: str) -> None:
        self._metrics.config_reloads.labels(result="failure").inc()
        log.error("config_reload_rejected", path=str(self.path), reason=reason, action="the running routes stay active")

    def _stat(self) -> Fingerprint | None:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

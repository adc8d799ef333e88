"""Several ingress worker processes on one port, and the supervisor that runs them.

``hitl-gateway serve --workers N`` starts N processes. Each binds its own listening
socket to the same address with SO_REUSEPORT, so the kernel spreads new connections
over them, and each runs its own uvloop event loop, Kafka producer and Redis client.
They share nothing but the Redis dedup store, which is why more than one worker needs
``dedup.backend: redis``.

The supervisor (the process that ran the command) does not serve requests. It

- keeps a bound, non-listening socket on the port, so the port stays ours while a
  worker restarts and ``http.port: 0`` gives every worker the same port;
- creates the PROMETHEUS_MULTIPROC_DIR that lets /metrics on any worker report all;
- restarts a worker that dies, after a pause that doubles with each death in a row;
- on SIGTERM or SIGINT sends SIGTERM to every worker, which stops accepting, finishes
  its requests and flushes its producer, and SIGKILLs those still running after
  ``serve.stop_timeout_s``. A second signal kills them at once.

Workers are started with the ``spawn`` method: a fresh interpreter imports
prometheus_client only after the metrics directory is in its environment.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_any

import structlog

from gateway.errors import ConfigError, GatewayError
from gateway.settings import GatewaySettings

log = structlog.get_logger("gateway.workers")

# A worker that ran this long before dying restarts after the shortest pause again.
STABLE_RUN_S = 60.0
LISTEN_BACKLOG = 1024
PR_SET_PDEATHSIG = 1


def resolve_worker_count(settings: GatewaySettings, requested: int | None = None) -> int:
    """Return how many workers to run: ``requested``, else serve.workers, else a default.

    The default is one per usable core with the Redis store and 1 with the in-memory
    store. More than one worker with the in-memory store raises ConfigError: each worker would
    remember only its own deliveries, and a duplicate that reached another worker would
    be produced again.
    """
    count = requested if requested is not None else settings.serve.workers
    if count is not None and count < 1:
        raise ConfigError(f"--workers {count}: give a number of worker processes of 1 or more")
    if settings.dedup.backend == "memory":
        if count is not None and count > 1:
            raise ConfigError(
                f"{count} workers need the shared Redis dedup store: with the in-memory store each worker "
                "remembers only its own deliveries, so a duplicate that reaches another worker is produced again. "
                "Configure Redis with dedup.backend: redis and dedup.redis.url in the YAML file "
                "(or GATEWAY_DEDUP_BACKEND=redis and GATEWAY_REDIS_URL=redis://host:6379/0), or run 1 worker"
            )
        return 1
    return count or usable_cores()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ListenAddress:
    """The address every worker listens on, as socket.getaddrinfo resolved http.host."""

    family: int
    sockaddr: tuple

    @property
    def port(self) -> int:
        return self.sockaddr[1]


def reuse_port_socket(address: ListenAddress, *, reuse_port: bool = True) -> socket.socket:
    """Return a socket bound to ``address``, not yet listening.

    With ``reuse_port`` (the workers of ``serve --workers N``), other sockets may bind the
    same port. Without it, a second gateway on the port fails at start-up instead of
    silently sharing its traffic.
    """
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if address.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address.sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int, *, reuse_port: bool = True) -> tuple[socket.socket, ListenAddress]:
    """Bind a socket to ``host:port``; with port 0 the kernel picks one.

    The supervisor keeps such a socket open as a placeholder for its workers, and a
    single-process gateway listens on it. Raises ConfigError when the address cannot be used.
    """
    try:
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ConfigError(f"http.host: cannot resolve {host!r} ({error.strerror}); give an IP address or a known host name") from None
    try:
        sock = reuse_port_socket(ListenAddress(family, sockaddr), reuse_port=reuse_port)
    except OSError as error:
        raise ConfigError(
            f"http.port: cannot bind {host}:{port} ({error.strerror}); stop the program that uses it "
            "or choose another port (GATEWAY_HTTP_PORT)"
        ) from None
    return sock, ListenAddress(family, sock.getsockname())


@dataclass
class _Worker:
    index: int
    process: multiprocessing.process.BaseProcess
    started_at: float


class Supervisor:
    """A foreground loop that starts, watches, restarts and stops the worker processes."""

    def __init__(self, settings: GatewaySettings, secrets: list[str], worker_count: int) -> None:
        self._settings = settings
        self._secrets = secrets
        self._worker_count = worker_count
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._deaths_in_a_row: dict[int, int] = {}
        self._restart_at: dict[int, float] = {}
        self._signals: list[int] = []

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; return the exit status for the command."""
        placeholder, address = reserve_port(self._settings.http.host, self._settings.http.port)
        metrics_dir = tempfile.mkdtemp(prefix="hitl-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        previous = self._install_signal_handlers(wakeup_write)
        try:
            log.info(
                "supervisor_started",
                workers=self._worker_count,
                port=address.port,
                stop_timeout_s=self._settings.serve.stop_timeout_s,
            )
            for index in range(self._worker_count):
                self._start_worker(index, address)
            self._supervise(wakeup_read, address)
            self._stop_workers(wakeup_read)
        finally:
            self._restore_signal_handlers(previous)
            os.close(wakeup_read)
            os.close(wakeup_write)
            placeholder.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log.info("supervisor_stopped")
        return 0

    def _supervise(self, wakeup_read: int, address: ListenAddress) -> None:
        while True:
            timeout_s = None
            if self._restart_at:
                timeout_s = max(0.0, min(self._restart_at.values()) - time.monotonic())
            sentinels = {worker.process.sentinel: worker for worker in self._workers.values()}
            ready = wait_for_any([wakeup_read, *sentinels], timeout=timeout_s)

            if wakeup_read in ready:
                _drain(wakeup_read)
            if self._signals:
                log.info("supervisor_stopping", signal=signal.Signals(self._signals[0]).name)
                return

            for sentinel in ready:
                worker = sentinels.get(sentinel)
                if worker is not None:
                    self._worker_died(worker)

            now = time.monotonic()
            for index, due in list(self._restart_at.items()):
                if due <= now:
                    del self._restart_at[index]
                    self._start_worker(index, address)

    def _start_worker(self, index: int, address: ListenAddress) -> None:
        process = self._context.Process(
            target=run_worker,
            args=(self._settings, self._secrets, address, index, os.getpid()),
            name=f"hitl-gateway-worker-{index}",
        )
        process.start()
        self._workers[index] = _Worker(index, process, time.monotonic())
        log.info("worker_started", worker=index, pid=process.pid)

    def _worker_died(self, worker: _Worker) -> None:
        process = worker.process
        process.join()
        del self._workers[worker.index]
        _forget_gauges(process.pid)

        ran_s = time.monotonic() - worker.started_at
        if ran_s >= STABLE_RUN_S:
            self._deaths_in_a_row[worker.index] = 0
        deaths = self._deaths_in_a_row.get(worker.index, 0)
        serve = self._settings.serve
        pause_s = min(serve.restart_backoff_s * 2**deaths, serve.max_restart_backoff_s)
        self._deaths_in_a_row[worker.index] = deaths + 1
        self._restart_at[worker.index] = time.monotonic() + pause_s
        log.warning(
            "worker_died",
            worker=worker.index,
            pid=process.pid,
            exit=_describe_exit(process.exitcode),
            ran_s=round(ran_s, 1),
            restart_in_s=pause_s,
        )

    def _stop_workers(self, wakeup_read: int) -> None:
        self._restart_at.clear()
        for worker in self._workers.values():
            _signal(worker.process, signal.SIGTERM)

        deadline = time.monotonic() + self._settings.serve.stop_timeout_s
        signals_seen = len(self._signals)
        while self._workers:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or len(self._signals) > signals_seen:
                break
            sentinels = {worker.process.sentinel: worker for worker in self._workers.values()}
            ready = wait_for_any([wakeup_read, *sentinels], timeout=remaining_s)
            if wakeup_read in ready:
                _drain(wakeup_read)
            for sentinel in ready:
                worker = sentinels.get(sentinel)
                if worker is not None:
                    worker.process.join()
                    del self._workers[worker.index]
                    _forget_gauges(worker.process.pid)
                    log.info("worker_stopped", worker=worker.index, pid=worker.process.pid, exit=_describe_exit(worker.process.exitcode))

        for worker in list(self._workers.values()):
            log.warning(
                "worker_killed",
                worker=worker.index,
                pid=worker.process.pid,
                reason="still running after serve.stop_timeout_s" if len(self._signals) <= signals_seen else "second signal",
                stop_timeout_s=self._settings.serve.stop_timeout_s,
            )
            _signal(worker.process, signal.SIGKILL)
            worker.process.join()
            del self._workers[worker.index]

    def _install_signal_handlers(self, wakeup_write: int) -> dict[int, object]:
        def remember(signal_number: int, _frame) -> None:
            self._signals.append(signal_number)

        previous = {number: signal.signal(number, remember) for number in (signal.SIGTERM, signal.SIGINT)}
        previous[-1] = signal.set_wakeup_fd(wakeup_write)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, object]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_worker(settings: GatewaySettings, secrets: list[str], address: ListenAddress, index: int, supervisor_pid: int) -> None:
    """Serve on a SO_REUSEPORT socket until SIGTERM: the body of one worker process."""
    _die_with_supervisor(supervisor_pid)
    from gateway.logs import configure_logging

    configure_logging(format=settings.logging.format, level=settings.logging.level, access_log=settings.http.access_log)
    structlog.contextvars.bind_contextvars(worker=index)
    # The supervisor handles Ctrl-C; a worker stops on the SIGTERM that follows, or on
    # its own SIGINT from the terminal, through serve()'s handlers.
    import uvloop

    from gateway.app import serve

    sock = reuse_port_socket(address)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    try:
        uvloop.run(serve(settings, secrets, sock=sock))
    except GatewayError as error:
        log.error("worker_failed", error=str(error), error_type=type(error).__name__)
        sys.exit(1)


def _die_with_supervisor(supervisor_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:
        # The supervisor died before prctl took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def _forget_gauges(pid: int | None) -> None:
    # A dead worker's requests-in-flight gauge must not count in the sum any more.
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def _signal(process: multiprocessing.process.BaseProcess, signal_number: int) -> None:
    try:
        os.kill(process.pid, signal_number)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"status {exitcode}"

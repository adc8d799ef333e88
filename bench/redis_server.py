"""A throwaway redis-server on 127.0.0.1, for the benchmark and the scale-out tests.

It listens on a free port, keeps nothing on disk (no RDB snapshots, no append-only
file) and writes its log into its own directory. Debian's package is ``redis-server``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 10.0


class RedisServer:
    def __init__(self, directory: Path, *, port: int | None = None, binary: str | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.binary = binary or shutil.which("redis-server")
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it replies to PING."""
        if self._process is not None:
            return
        if self.binary is None:
            raise FileNotFoundError("redis-server is not on PATH; install it with 'apt-get install -y redis-server'")
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / "redis.log"
        self._process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(log_path),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                raise RuntimeError(f"redis-server exited at start on port {self.port}; its log ends with:\n{tail}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not reply to PING on port {self.port} within {START_TIMEOUT_S:.0f} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """Send one command in the inline protocol and return the raw reply (for probes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as connection:
            connection.sendall(" ".join(words).encode() + b"\r\n")
            return connection.recv(65536)

    def stop(self) -> None:
        """Stop the server; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""Helpers for the local processes the integration layer starts: free ports, readiness."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import httpx

__all__ = ["ManagedProcess", "ProcessFailed", "free_port", "free_port_pair", "tail", "wait_ready"]


class ProcessFailed(RuntimeError):
    """A child process exited or never became ready; the message carries its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair(attempts: int = 100) -> int:
    """A TCP port ``p`` on 127.0.0.1 such that ``p`` and ``p + 1`` are both free right now.

    Weaviate nodes that share one host find a peer's data port one above its gossip port, and
    its internal Raft RPC port one above its Raft port, so these come in pairs.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no two adjacent free ports on 127.0.0.1 after {attempts} tries")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def wait_ready(
    url: str, process: subprocess.Popen, log_path: Path, what: str, timeout: float = 180.0
) -> None:
    """Poll ``url`` until it answers 2xx; fail early with the log if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProcessFailed(
                f"{what} exited with code {process.returncode}; log tail:\n{tail(log_path)}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code < 300:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise ProcessFailed(
        f"{what} not ready at {url} after {timeout:.0f}s; log tail:\n{tail(log_path)}"
    )


class ManagedProcess:
    """A child process with a log file, started by :meth:`start` and stopped by :meth:`stop`.

    Subclasses implement :meth:`spawn` with :meth:`_spawn` and :meth:`wait_until_ready` with
    :meth:`_wait_ready`; :meth:`start` does one then the other. Several processes can be
    spawned first and then awaited, so that they start side by side (a local cluster).
    """

    log_path: Path

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self.keep_log = False  # set when start-up fails: the error message points at the log

    def start(self) -> Self:
        """Spawn the process and wait until it is ready."""
        self.spawn()
        return self.wait_until_ready()

    def spawn(self) -> Self:
        """Start the process without waiting for it."""
        raise NotImplementedError

    def wait_until_ready(self) -> Self:
        """Wait until the spawned process is ready; on failure it is stopped, its log kept."""
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        # Appending: a process restarted after kill() keeps the log of its first life.
        self._log_file = self.log_path.open("a")
        self._process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def _wait_ready(self, url: str, what: str, timeout: float) -> None:
        assert self._process is not None
        try:
            wait_ready(url, self._process, self.log_path, what, timeout)
        except ProcessFailed:
            self.keep_log = True
            self.stop()
            raise

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited (``cir up`` watches this)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while started (for memory readings and fault injection)."""
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault injection): no clean shutdown, and what the process
        keeps on disk stays for a later :meth:`start`, which appends to the same log."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close()

    def _close(self) -> None:
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; closes the log."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._close()
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

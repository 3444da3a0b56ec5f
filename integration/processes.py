"""Helpers for the local processes the integration layer starts: free ports, readiness.

Ports are chosen below the kernel's ephemeral range (``ip_local_port_range``), where the
kernel never hands one out as the source port of an outgoing connection: a port chosen in
that range (``bind(("127.0.0.1", 0))``) can be taken by any client connection before the
child binds it, or while a killed node is down and waits to be started again on the same
ports. No port is handed out twice by one process. What is left of the race (another process
binding the same port first) is met by starting again on new ports
(:meth:`ManagedProcess.ready`).
"""

from __future__ import annotations

import logging
import random
import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import httpx

__all__ = [
    "ManagedProcess",
    "PortInUse",
    "ProcessFailed",
    "free_port",
    "free_port_pair",
    "tail",
    "wait_ready",
]

log = logging.getLogger(__name__)

# Ports handed out by this process: never handed out again, since a child that has not bound
# its port yet leaves it free in the meantime.
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()
_LOWEST = 20000  # below: well-known and registered services more often listen
_RANDOM = random.SystemRandom()  # not seeded by a test's random.seed: processes differ

# What a child writes when it cannot listen: Go ("bind: address already in use"), uvicorn
# ("[Errno 98] error while attempting to bind on address ... address already in use").
BIND_FAILED = re.compile(r"address already in use", re.IGNORECASE)


class ProcessFailed(RuntimeError):
    """A child process exited or never became ready; the message carries its log tail."""


class PortInUse(ProcessFailed):
    """A child process could not listen on a port it was given: another took it first."""


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for source ports of outgoing connections (Linux; else IANA's)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def _candidates(span: int = 1) -> range:
    """The ports to choose from: below the ephemeral range, or above it where it starts low."""
    low, high = _ephemeral_range()
    if low - span > _LOWEST + 1000:
        return range(_LOWEST, low - span + 1)
    if 65536 - span - (high + 1) > 1000:
        return range(high + 1, 65536 - span)
    return range(1024, 65536 - span)  # the range covers nearly all: the retries must do


def _is_free(port: int) -> bool:
    """Whether ``port`` can be listened on at 127.0.0.1 right now (TCP; UDP too, which
    memberlist's gossip binds on the same number)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _claim(span: int, attempts: int) -> int:
    """A port ``p`` with ``p`` .. ``p + span - 1`` all free now and never handed out here."""
    candidates = _candidates(span)
    for _ in range(attempts):
        port = _RANDOM.choice(candidates)
        wanted = range(port, port + span)
        with _HANDED_OUT_LOCK:
            if any(p in _HANDED_OUT for p in wanted) or not all(map(_is_free, wanted)):
                continue
            _HANDED_OUT.update(wanted)
        return port
    raise RuntimeError(
        f"no {span} adjacent free port(s) on 127.0.0.1 in {candidates} after {attempts} tries"
    )


def free_port(attempts: int = 200) -> int:
    """A TCP port on 127.0.0.1 that is free right now, outside the ephemeral range, and not
    handed out before by this process."""
    return _claim(1, attempts)


def free_port_pair(attempts: int = 200) -> int:
    """A TCP port ``p`` on 127.0.0.1 such that ``p`` and ``p + 1`` are both free right now
    (outside the ephemeral range, neither handed out before by this process).

    Weaviate nodes that share one host find a peer's data port one above its gossip port, and
    its internal Raft RPC port one above its Raft port, so these come in pairs.
    """
    return _claim(2, attempts)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _written_since(path: Path, offset: int) -> str:
    """What was appended to the log at ``path`` after byte ``offset``."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def wait_ready(
    url: str,
    process: subprocess.Popen,
    log_path: Path,
    what: str,
    timeout: float = 180.0,
    log_offset: int = 0,
    peers: Sequence[ManagedProcess] = (),
) -> None:
    """Poll ``url`` until it answers 2xx; fail early with the log if ``process`` exits.

    :class:`PortInUse` if the log written since ``log_offset`` (this life of the process: a
    restarted one appends to its old log) says that a port was taken, whether the process
    exited on it or goes on without that listener; or if one of ``peers`` says so (processes
    that are not ready without each other, a cluster's nodes).
    """
    deadline = time.monotonic() + timeout
    checked = 0.0
    while time.monotonic() < deadline:
        exited = process.poll() is not None
        if exited or time.monotonic() - checked > 1.0:
            checked = time.monotonic()
            if BIND_FAILED.search(_written_since(log_path, log_offset)):
                raise PortInUse(
                    f"{what} could not listen: a port was taken; log tail:\n{tail(log_path)}"
                )
            if taken := next((peer for peer in peers if peer.failed_to_bind()), None):
                raise PortInUse(
                    f"{what} cannot be ready: a peer could not listen, a port was taken; "
                    f"its log tail:\n{tail(taken.log_path)}"
                )
        if exited:
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
    :meth:`_wait_ready`; :meth:`start` does one then :meth:`ready`. Several processes can be
    spawned first and then awaited, so that they start side by side (a local cluster).

    A port chosen free can be taken by another process before the child listens on it.
    Subclasses whose ports were chosen by the launcher implement :meth:`choose_new_ports`,
    and :meth:`ready` then spawns again on new ports when the child could not bind.
    """

    log_path: Path
    port_attempts = 4  # starts on newly chosen ports before a bind failure is final

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._log_offset = 0
        self.keep_log = False  # set when start-up fails: the error message points at the log
        # Started side by side and not ready without each other (a cluster's nodes): a bind
        # failure in one ends the others' waits at once instead of after their timeouts.
        self.peers: Sequence[ManagedProcess] = ()

    def start(self) -> Self:
        """Spawn the process and wait until it is ready (on new ports if one was taken)."""
        self.spawn()
        return self.ready()

    def ready(self) -> Self:
        """:meth:`wait_until_ready`; should the child fail to bind a port the launcher chose
        (:class:`PortInUse`), choose new ones and spawn again, up to :attr:`port_attempts`
        starts in all. On a final failure the process is stopped and its log kept."""
        for attempt in range(1, self.port_attempts + 1):
            try:
                return self.wait_until_ready()
            except PortInUse as error:
                if attempt == self.port_attempts or not self.choose_new_ports():
                    self.keep_log = True
                    self.stop()
                    raise
                log.warning(
                    "%s: a port was taken before it could listen (%s); starting again on %s",
                    type(self).__name__,
                    next(line for line in str(error).splitlines() if BIND_FAILED.search(line)),
                    self.ports(),
                )
                self.spawn()
        raise AssertionError("unreachable")

    def failed_to_bind(self) -> bool:
        """Whether this life of the process wrote that a port it was given was taken."""
        if self._process is None:
            return False
        return bool(BIND_FAILED.search(_written_since(self.log_path, self._log_offset)))

    def choose_new_ports(self) -> bool:
        """Choose new ports for the next start after a bind failure; ``False`` if the ports
        are fixed (given by the caller, or already known to clients or peers)."""
        return False

    def ports(self) -> dict[str, int]:
        """The ports the process listens on, by role (for messages)."""
        return {}

    def spawn(self) -> Self:
        """Start the process without waiting for it."""
        raise NotImplementedError

    def wait_until_ready(self) -> Self:
        """Wait until the spawned process is ready. On a bind failure (:class:`PortInUse`)
        the process is ended and its data kept (:meth:`ready` may start it again); on any
        other failure it is stopped, its log kept."""
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        # Appending: a process restarted after kill() keeps the log of its first life; what
        # this life writes starts at the offset.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_file = self.log_path.open("a")
        self._process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def _wait_ready(self, url: str, what: str, timeout: float) -> None:
        assert self._process is not None
        try:
            wait_ready(
                url, self._process, self.log_path, what, timeout, self._log_offset, self.peers
            )
        except PortInUse:
            self.kill()  # not stop(): a server's data must outlive a start on new ports
            raise
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

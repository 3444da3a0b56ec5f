"""``cir up``: the local stack (``integration.stack``: the service, then Weaviate) kept
running until Ctrl-C or SIGTERM, then stopped in order; for ``cir ingest`` and ``cir search``
and any other client to use meanwhile."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from integration.stack import LocalStack, local_stack

__all__ = ["StackStopped", "describe_stack", "stand_up"]

log = logging.getLogger(__name__)

# Weaviate's own defaults, where ``weaviate.connect_to_local()`` looks without arguments.
DEFAULT_HTTP_PORT = 8080
DEFAULT_GRPC_PORT = 50051


class StackStopped(RuntimeError):
    """A process of the stack exited by itself (the message names it and its log)."""


def describe_stack(stack: LocalStack, checkpoint: str | Path, data_dir: Path | None) -> str:
    """The lines ``cir up`` prints once the stack is ready: where each part listens."""
    server, service = stack.weaviate, stack.service
    kept = f"{server.data_dir} (kept)" if data_dir else "a temporary folder, removed on stop"
    return "\n".join(
        [
            f"Weaviate {server.served_version}: {server.url} (gRPC port {server.grpc_port})",
            f"service: {service.url} serving {checkpoint}",
            f"data: {kept}",
            f"connect: weaviate.connect_to_local(port={server.http_port}, "
            f"grpc_port={server.grpc_port})",
            "ready; Ctrl-C or SIGTERM stops both",
        ]
    )


def stand_up(
    checkpoint: str | Path,
    *,
    http_port: int = DEFAULT_HTTP_PORT,
    grpc_port: int = DEFAULT_GRPC_PORT,
    service_port: int | None = None,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    on_ready: Callable[[str], None] = print,
    poll_s: float = 1.0,
) -> None:
    """Start the stack, report it through ``on_ready`` and wait for SIGINT or SIGTERM; both
    processes are stopped on the way out (Weaviate first, then the service). Raises
    :class:`StackStopped` when one of them exits by itself meanwhile.

    Must run in the main thread (signal handlers are installed there, and restored after).
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with local_stack(
            checkpoint,
            env=env,
            http_port=http_port,
            grpc_port=grpc_port,
            service_port=service_port,
            data_dir=data_dir,
        ) as stack:
            on_ready(describe_stack(stack, checkpoint, data_dir))
            while not stop.wait(poll_s):
                for name, process in (("Weaviate", stack.weaviate), ("service", stack.service)):
                    if not process.running and not stop.is_set():
                        process.keep_log = True  # the message points at it
                        raise StackStopped(f"{name} exited by itself; log: {process.log_path}")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

"""The HTTP/1.1 protocol `cir serve` runs: uvicorn's h11 protocol with a header deadline.

uvicorn times out only idle keep-alive connections after a response. A connection that opens
and sends nothing, or sends half a request line and stops, is held for ever (a few thousand
of them exhaust the process's file descriptors). Here such a connection is closed when its
request headers have not all arrived ``header_timeout_s`` after it opened or last sent data.
Bodies that stop arriving are the application's to time out (``body_timeout_s``).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_h11"]


class _GuardedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # a request has begun; its headers are not complete
        else:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request headers did not arrive")
            self.transport.close()


def guarded_h11(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol closing connections whose headers are late (``http=`` of
    ``uvicorn.run``)."""
    return type(
        "GuardedH11Protocol", (_GuardedH11Protocol,), {"header_timeout_s": header_timeout_s}
    )

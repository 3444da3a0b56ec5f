"""The HTTP/1.1 protocols `cir serve` runs: uvicorn's, with a header deadline.

uvicorn times out only idle keep-alive connections after a response. A connection that opens
and sends nothing, or sends half a request line and stops, is held for ever (a few thousand
of them exhaust the process's file descriptors). Here such a connection is closed when its
request headers have not all arrived ``header_timeout_s`` after it opened, or after the first
byte of a later request on it arrived: the deadline bounds the whole header, so a client that
sends one byte every few seconds gains nothing by it.
Bodies that stop arriving are the application's to time out (``body_timeout_s``). A request
the parser cannot read gets a 400 with a JSON ``error``, as every other bad request does
(uvicorn's own answer is plain text).

Two parsers, the same deadline: ``h11`` (pure Python, the default) and ``httptools``
(llhttp, in C; the ``http`` extra). On the shipped model the C parser served no more images
per second (docs/results.md, issue 22): the parse is not where a request's time goes.
"""

from __future__ import annotations

import asyncio
import json

__all__ = ["PARSERS", "guarded_protocol"]

PARSERS = ("h11", "httptools")


_MALFORMED = json.dumps(
    {
        "error": "malformed HTTP/1.1 request: its request line or headers could not be parsed "
        "(a standard method, a path, HTTP/1.1, then headers with CRLF line ends)"
    }
).encode()


class _Guarded:
    """The header deadline, for a protocol that says when it is waiting for request headers,
    and the JSON answer to a request the parser refuses."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError

    # Mixed in before uvicorn's protocol class: each hook runs uvicorn's, then the deadline's.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        """Start the deadline when headers begin to be awaited (it then runs on, whatever
        arrives), stop it once they are in."""
        if not self._awaiting_headers():
            self._cancel_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.logger.debug("closing a connection whose request headers did not arrive")
            self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn warns on every upgrade request when WebSocket is off (and names a library
        # to install); here that is by design, and the middleware answers the request.
        self.logger.debug("upgrade request answered as plain HTTP")

    def send_400_response(self, msg: str) -> None:
        # The parser has failed: its state is of no use, the connection ends after this.
        head = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_MALFORMED)
        )
        self.transport.write(head + _MALFORMED)
        self.transport.close()


def _h11_guarded() -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(_Guarded, H11Protocol):
        def _awaiting_headers(self) -> bool:
            return self.conn.their_state is h11.IDLE

    return GuardedH11Protocol


def _httptools_guarded() -> type:
    from cir_module.lazy import missing_extra

    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "CIR_HTTP_PARSER=httptools") from exc

    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):
        # Between a response and the next request uvicorn's keep-alive timeout applies.
        _in_headers = True

        def _awaiting_headers(self) -> bool:
            return self._in_headers

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

    return GuardedHttpToolsProtocol


def guarded_protocol(parser: str, header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol for ``parser`` (one of :data:`PARSERS`), closing
    connections whose request headers are late (``http=`` of ``uvicorn.run``)."""
    builders = {"h11": _h11_guarded, "httptools": _httptools_guarded}
    if parser not in builders:
        raise ValueError(f"unknown HTTP parser {parser!r} (known: {', '.join(PARSERS)})")
    base = builders[parser]()
    return type(base.__name__, (base,), {"header_timeout_s": header_timeout_s})

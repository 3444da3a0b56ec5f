"""Errors that map to a 4xx answer: the caller sent something we cannot use."""

from __future__ import annotations

__all__ = ["ClientGone", "InputError", "Overloaded"]


class InputError(ValueError):
    """Malformed client input. The service answers it with 4xx and ``{"error": message}``."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class Overloaded(RuntimeError):
    """The service is at capacity. Answered with 503, ``Retry-After`` and ``{"error": ...}``
    instead of queueing without bound."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class ClientGone(ConnectionError):
    """The client disconnected before its request was read: nothing can be answered.
    Counted (status 499, as proxies log it), never logged as a failure."""

"""Domain errors raised by validation, store and search; the servicer maps them to status codes."""

from __future__ import annotations

QUOTED_CHARACTERS = 100  # of a caller's value in an error message; the rest is counted


def quoted(value: str) -> str:
    """A caller's value as an error message quotes it: whole when short, else its first
    QUOTED_CHARACTERS characters and its length (a 200,000-character name is not echoed)."""
    if len(value) <= QUOTED_CHARACTERS:
        return repr(value)
    return f"{value[:QUOTED_CHARACTERS] + '...'!r} ({len(value)} characters)"


class ServiceError(Exception):
    """A request the server refuses; the message is safe to show to the caller."""


class InvalidArgument(ServiceError):
    """A field is malformed or out of its bound."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class NotFound(ServiceError):
    """An unknown model, version or movie."""


class FailedPrecondition(ServiceError):
    """The server is not in a state to answer (no model is ready yet)."""


class ResourceExhausted(ServiceError):
    """The request asks for more work than the server allows."""


class Cancelled(ServiceError):
    """A training was stopped by its caller, its deadline or a shutdown; nothing is stored."""

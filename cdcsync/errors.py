"""The error taxonomy.

Library errors (asyncpg, nats-py) are turned into these at the boundary with
``raise ... from exc`` so that the flow supervisor can decide by type alone:
retry (the world is temporarily broken) or dead-letter (this message is bad).
"""

from __future__ import annotations

__all__ = [
    "CdcSyncError",
    "ConfigError",
    "DecodeError",
    "FatalSinkError",
    "FatalSourceError",
    "RetryableSinkError",
    "SinkError",
    "SourceError",
]


class CdcSyncError(Exception):
    """Base of every error cdcsync raises on purpose."""


class ConfigError(CdcSyncError):
    """The configuration is invalid; ``errors`` holds ``file:line: message`` strings."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class DecodeError(CdcSyncError):
    """A message cannot be turned into a change event; it goes to the dead letters."""


class SourceError(CdcSyncError):
    """The source cannot deliver (server gone, consumer lost, sequence gap)."""


class FatalSourceError(SourceError):
    """The source cannot work as configured (a server too old for it, a stream set up
    differently); retrying does not help, an operator must act."""


class SinkError(CdcSyncError):
    """A destination failed to apply a batch."""


class RetryableSinkError(SinkError):
    """The destination is unavailable for now; retry the same batch later."""


class FatalSinkError(SinkError):
    """The destination cannot work as configured (missing table, no key); needs an operator."""

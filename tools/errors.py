"""Typed errors of the tools layer.

A `ToolError` is a tool failure an agent can observe and recover from (a refused URL,
a 404, a PDF, a timeout, a replay miss). Agents catch it and record it as an observation;
developer mistakes (a bad argument) raise ordinary `ValueError`/`TypeError` instead.
"""

from __future__ import annotations


class ToolError(Exception):
    """A tool call failed in a way the caller should record, not crash on."""

    def __init__(self, message: str, *, kind: str = "error", target: str | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.target = target

    def to_dict(self) -> dict[str, str | None]:
        """Return a JSON-ready description of the failure."""
        return {"kind": self.kind, "message": self.message, "target": self.target}


class URLRefused(ToolError):
    """The SSRF guard refused a URL (scheme, or a host resolving to a non-public address)."""

    def __init__(self, message: str, *, target: str | None = None):
        super().__init__(message, kind="refused", target=target)


class ReplayMiss(ToolError):
    """A replay-mode cache was asked for a call it never recorded."""

    def __init__(self, message: str, *, target: str | None = None):
        super().__init__(message, kind="replay_miss", target=target)

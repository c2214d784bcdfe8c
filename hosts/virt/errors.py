"""Typed errors raised by the libvirt adapter."""

from __future__ import annotations

from core.errors import HostFailure


class VirtError(HostFailure):
    """A libvirt operation failed or was refused before reaching libvirt."""

    def __init__(self, message: str, code: int | None = None) -> None:
        """Keep a readable message and the libvirt error code (None when refused locally)."""
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        """Return the readable message."""
        return self.message


class NotFound(VirtError):
    """A domain, storage pool, volume or network does not exist."""


class ConnectError(VirtError):
    """The host's libvirt could not be reached (refused, timed out, or backing off)."""

    def __init__(self, message: str, uri: str, code: int | None = None) -> None:
        """Keep the message and the URI that could not be reached."""
        super().__init__(message, code)
        self.uri = uri


class ShutdownTimeout(VirtError):
    """The guest was asked to power off by ACPI and was still running when the wait ended."""

    def __init__(self, message: str, seconds: float) -> None:
        """Keep the message and how long the guest was waited for."""
        super().__init__(message)
        self.seconds = seconds

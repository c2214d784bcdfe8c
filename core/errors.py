"""Errors services raise for people to read."""


class PortalError(Exception):
    """An action that cannot be done now, with a message for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PoolExhausted(PortalError):
    """No free address or port is left in the pool."""


class HostFailure(Exception):  # noqa: N818 - a kind of failure, named as people say it
    """A host, hypervisor or NAT box failed; its own text is for administrators only."""

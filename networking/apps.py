"""Networking: VLANs and the address pools VMs draw from."""

from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    """Register the networking application."""

    name = "networking"
    verbose_name = "Networking"

    def ready(self) -> None:
        """Register the system checks of the networking settings."""
        from . import checks  # noqa: F401

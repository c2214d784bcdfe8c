"""Networking: VLANs and the address pools VMs draw from."""

from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    """Register the networking application."""

    name = "networking"
    verbose_name = "Networking"

    def ready(self) -> None:
        """Register the system checks of the networking settings and declare its permissions."""
        from . import checks, rules, services  # noqa: F401  (services: the NAT operation spec)

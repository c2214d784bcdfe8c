"""Networking: VLANs and the address pools VMs draw from."""

from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    """Register the networking application."""

    name = "networking"
    verbose_name = "Networking"

    def ready(self) -> None:
        """Register the system checks of the networking settings and declare its permissions."""
        from hosts.health_check import host_networks_source_set

        from . import checks, rules, services  # noqa: F401  (services: the NAT operation spec)
        from .models import VLAN

        # The hosts' health check looks for the libvirt networks the VLANs use.
        host_networks_source_set(lambda _host: sorted(
            set(VLAN.objects.values_list("network_name", flat=True))))

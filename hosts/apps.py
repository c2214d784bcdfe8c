"""Hosts: hypervisors, datastores and templates."""

from django.apps import AppConfig


class HostsConfig(AppConfig):
    """Register the hosts application."""

    name = "hosts"
    verbose_name = "Hosts"

    def ready(self) -> None:
        """Declare the permissions on hosts (rules); register the host operation specs."""
        from operations.registry import host_hooks_register

        from . import rules, services  # noqa: F401
        from .health import HostOperationHooks

        host_hooks_register(HostOperationHooks())

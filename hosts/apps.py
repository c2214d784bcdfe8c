"""Hosts: hypervisors, datastores and templates."""

from typing import Any

from django.apps import AppConfig
from django.conf import settings


class HostsConfig(AppConfig):
    """Register the hosts application."""

    name = "hosts"
    verbose_name = "Hosts"

    def schedules(self) -> list[dict[str, Any]]:
        """Return the hosts' health check as django-q Schedule fields (`schedules_ensure`)."""
        return [{"name": "portal-host-health", "func": "hosts.tasks.health_check_all",
                 "schedule_type": "I",
                 "minutes": max(1, settings.PORTAL_HOST_HEALTH["EVERY_MINUTES"])}]

    def ready(self) -> None:
        """Declare the permissions on hosts (rules); register the host operation specs."""
        from operations.registry import host_hooks_register, target_register

        from . import health_check, power, rules, services  # noqa: F401
        from .health import HostOperationHooks, HostTargetHooks

        host_hooks_register(HostOperationHooks())
        # A dead host operation's recorded steps (a respawn's) are given back by the engine.
        target_register("host", HostTargetHooks())

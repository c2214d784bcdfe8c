"""Hosts: hypervisors, datastores and templates."""

from django.apps import AppConfig


class HostsConfig(AppConfig):
    """Register the hosts application."""

    name = "hosts"
    verbose_name = "Hosts"

"""Monitoring: host and VM utilisation in RRD files."""

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Register the monitoring application."""

    name = "monitoring"
    verbose_name = "Monitoring"

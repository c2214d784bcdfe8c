"""The portal's own application: dashboards, permissions, navigation."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """Register the portal application."""

    name = "portal"
    verbose_name = "Portal"

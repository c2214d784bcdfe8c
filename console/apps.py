"""The browser console: single-use tokens, the console pages and the websocket proxy."""

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Register the console application and its system checks."""

    name = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        """Register the console's deployment checks."""
        from . import checks  # noqa: F401

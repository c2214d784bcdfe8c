"""The REST API: personal tokens and the JSON face of the portal's services."""

from django.apps import AppConfig


class ApiConfig(AppConfig):
    """Register the API application and its permissions."""

    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        """Declare the permissions on tokens (rules) and the schema's security scheme."""
        from . import (
            rules,  # noqa: F401
            schema,  # noqa: F401
        )

"""Accounts: users with a role in an organisation."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Register the accounts application."""

    name = "core.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        """Declare the permissions on people (rules)."""
        from . import rules  # noqa: F401

"""System checks of the networking settings, so a bad value stops the portal at start-up."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from .allocation import SSHPortSettingsError, ssh_port_config_from


@register()
def ssh_port_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Refuse forwarded SSH port settings that cannot be used."""
    try:
        ssh_port_config_from(settings.PORTAL_NAT)
    except SSHPortSettingsError as exc:
        return [Error(str(exc), hint="Fix the setting in the environment and start again.",
                      id="networking.E001")]
    return []

"""System checks of the console's settings."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import listen_address

MAX_TOKEN_SECONDS = 60


@register()
def console_settings(app_configs: object = None, **kwargs: object) -> list:
    """Refuse console settings that cannot work or would weaken the tokens."""
    problems = []
    try:
        listen_address()
    except ValueError as exc:
        problems.append(Error(str(exc), hint="Give host:port, e.g. 127.0.0.1:6080.",
                              id="console.E001"))
    if not 1 <= settings.PORTAL_CONSOLE_TOKEN_SECONDS <= MAX_TOKEN_SECONDS:
        problems.append(Error(
            f"PORTAL_CONSOLE_TOKEN_SECONDS is {settings.PORTAL_CONSOLE_TOKEN_SECONDS}; a console "
            f"token must expire within {MAX_TOKEN_SECONDS} seconds.", id="console.E002"))
    for name in ("PORTAL_CONSOLE_IDLE_SECONDS", "PORTAL_CONSOLE_MAX_SECONDS",
                 "PORTAL_CONSOLE_PER_TOKEN", "PORTAL_CONSOLE_PER_USER"):
        if getattr(settings, name) < 1:
            problems.append(Error(f"{name} must be at least 1.", id="console.E003"))
    url = settings.PORTAL_CONSOLE_URL.strip().lower()
    if url and not url.startswith(("ws://", "wss://")):
        problems.append(Error(f"PORTAL_CONSOLE_URL {settings.PORTAL_CONSOLE_URL!r} is not a "
                              "ws:// or wss:// URL.", id="console.E004"))
    return problems


@register(Tags.security, deploy=True)
def console_tls(app_configs: object = None, **kwargs: object) -> list:
    """Warn when the site runs with HTTPS but consoles would travel without TLS."""
    https = settings.SECURE_SSL_REDIRECT or settings.SESSION_COOKIE_SECURE
    if https and settings.PORTAL_CONSOLE_URL.strip().lower().startswith("ws://"):
        return [Warning(
            "PORTAL_CONSOLE_URL is a ws:// URL while the site runs with HTTPS: console traffic "
            "(keystrokes, screens) would cross the network unencrypted, and browsers block "
            "ws:// from an https:// page.",
            hint="Serve the proxy behind a TLS front end and set PORTAL_CONSOLE_URL to its "
                 "wss:// URL.", id="console.W001")]
    return []

"""Throttling per token (or per signed-in session): 429 once the rate is spent."""

from __future__ import annotations

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from .models import ApiToken


class TokenRateThrottle(SimpleRateThrottle):
    """Count each token's calls on its own, and a session's as its user's."""

    scope = "token"

    def get_rate(self) -> str:
        """Read the rate each time, so that it follows the settings (PORTAL_API_RATE)."""
        return settings.PORTAL_API_RATE

    def get_cache_key(self, request: Request, view: object) -> str | None:
        """Key by token id, else by user id; anonymous calls are refused before this."""
        if isinstance(request.auth, ApiToken):
            ident = f"t{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"u{request.user.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}

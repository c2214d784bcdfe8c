"""The local-account login, for people the directory does not manage."""

from __future__ import annotations

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest


def throttle_username(request: HttpRequest | None, credentials: dict | None = None) -> str:
    """Return the name the login throttle counts failures under: the login, in lower case.

    The directory matches logins regardless of case, so "Alice" and "alice" are one account
    and must share one count.
    """
    name = (credentials or {}).get("username")
    if name is None and request is not None:
        name = getattr(request, "POST", {}).get("username")
    return str(name or "").strip().lower()


class LocalAccountBackend(ModelBackend):
    """Log in with a password kept in the portal, never for a directory account."""

    def user_can_authenticate(self, user) -> bool:  # noqa: ANN001
        """Refuse directory accounts: a local password must not outlive the directory's no."""
        return super().user_can_authenticate(user) and not getattr(user, "is_directory_user",
                                                                   False)

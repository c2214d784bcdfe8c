"""Who may call the API at all: signed-in people, read-only tokens only to read."""

from __future__ import annotations

from rest_framework import permissions
from rest_framework.request import Request

from .models import ApiToken


class PortalUser(permissions.BasePermission):
    """An active account; a read-only token only with GET, HEAD and OPTIONS.

    What each person may see and do is decided afterwards exactly as on the pages: the
    `visible_to(user)` querysets and `user.has_perm(...)` of the `rules` permissions.
    """

    message = "This token is read-only: it may only read (GET)."

    def has_permission(self, request: Request, view: object) -> bool:
        """Refuse anonymous callers and writes through a read-only token."""
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        token = request.auth
        if isinstance(token, ApiToken) and token.read_only:
            return request.method in permissions.SAFE_METHODS
        return True

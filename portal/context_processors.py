"""Navigation entries for the base layout, by role."""

from __future__ import annotations

from django.http import HttpRequest

from portal import permissions


def navigation(request: HttpRequest) -> dict:
    """Return the menu the user's role opens and the count of their pending approvals."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    admin = permissions.is_admin(user)
    approver = admin or user.role in ("faculty", "org_admin")
    return {
        "nav_is_admin": admin,
        "nav_is_approver": approver,
        "nav_awaiting": permissions.requests_awaiting(user).count() if approver else 0,
    }

"""Navigation entries for the base layout, by role."""

from __future__ import annotations

from django.http import HttpRequest

from portal import permissions


def navigation(request: HttpRequest) -> dict:
    """Return the menu the user's role opens and the count of their pending approvals."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Table cells render with the request's context too; compute once per request.
    cached = getattr(request, "_portal_navigation", None)
    if cached is not None:
        return cached
    admin = permissions.is_admin(user)
    approver = admin or user.role in ("faculty", "org_admin")
    cached = {
        "nav_is_admin": admin,
        "nav_is_approver": approver,
        "nav_manages_people": bool(permissions.grantable_roles(user)),
        "nav_awaiting": permissions.requests_awaiting(user).count() if approver else 0,
    }
    request._portal_navigation = cached
    return cached

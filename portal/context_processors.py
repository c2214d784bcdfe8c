"""Navigation entries for the base layout, by role."""

from __future__ import annotations

from django.http import HttpRequest

from core.accounts.predicates import is_portal_admin
from vms.models import VMRequest


def navigation(request: HttpRequest) -> dict:
    """Return the menu the user's role opens and the count of their pending approvals."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Table cells render with the request's context too; compute once per request.
    cached = getattr(request, "_portal_navigation", None)
    if cached is not None:
        return cached
    approver = user.has_perm("vms.approve_requests")
    cached = {
        "nav_is_admin": is_portal_admin.test(user),
        "nav_is_approver": approver,
        "nav_manages_people": user.has_perm("accounts.list_people"),
        "nav_awaiting": VMRequest.objects.awaiting(user).count() if approver else 0,
    }
    request._portal_navigation = cached
    return cached

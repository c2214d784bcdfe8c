"""The role predicates every application's rules and querysets build on (rules)."""

from __future__ import annotations

import rules
from django.db.models import Q, QuerySet


@rules.predicate
def is_portal_admin(user) -> bool:  # noqa: ANN001
    """Return whether the user administers the whole portal."""
    return bool(user.is_authenticated and user.is_active and user.is_portal_admin)


@rules.predicate
def is_org_admin(user) -> bool:  # noqa: ANN001
    """Return whether the user is the org-admin of an organisation."""
    return bool(getattr(user, "is_org_admin", False))


@rules.predicate
def in_own_organisation(user, obj) -> bool:  # noqa: ANN001
    """Return whether the object (a VM, a request, a person) is of the org-admin's organisation."""
    return (obj is not None and is_org_admin.test(user)
            and obj.organisation_id == user.organisation_id)


def narrow_to(queryset: QuerySet, user, mine: Q, *,  # noqa: ANN001
              organisation: str | None = "organisation_id") -> QuerySet:
    """Narrow to what the user sees: all for admins, `mine`, and their org's for org-admins."""
    if is_portal_admin.test(user):
        return queryset.all()
    if not user.is_authenticated:
        return queryset.none()
    if organisation and is_org_admin.test(user):
        mine |= Q(**{organisation: user.organisation_id})
    return queryset.filter(mine)

"""Who may see and manage people and organisations; imported by `AccountsConfig.ready()`.

Each application declares its own permissions in its `rules.py` with the role predicates of
`core.accounts.predicates`; `user.has_perm("accounts.manage_person", person)` then
answers the same in views, templates (`{% load rules %}`), the admin and an API.
"""

from __future__ import annotations

import rules

from .models import Role, User
from .predicates import in_own_organisation, is_org_admin, is_portal_admin


@rules.predicate
def is_other_admin(user, person) -> bool:  # noqa: ANN001
    """Return whether the person administers the portal (an org-admin may not manage them)."""
    return person is not None and person.is_portal_admin


@rules.predicate
def grants_below_admin(user, role) -> bool:  # noqa: ANN001
    """Return whether the role is one an org-admin may give: any but admin."""
    return role in Role.values and role != Role.ADMIN


@rules.predicate
def is_a_role(user, role) -> bool:  # noqa: ANN001
    """Return whether the object is one of the portal's roles."""
    return role in Role.values


@rules.predicate
def sees_person(user, person) -> bool:  # noqa: ANN001
    """Return whether the person is among those the user manages (`User.people.visible_to`)."""
    return person is not None and User.people.visible_to(user).filter(pk=person.pk).exists()


rules.add_perm("accounts.list_people", is_portal_admin | is_org_admin)
rules.add_perm("accounts.view_person", sees_person)
rules.add_perm("accounts.manage_person",
               is_portal_admin | (in_own_organisation & ~is_other_admin))
rules.add_perm("accounts.grant_role",
               (is_portal_admin & is_a_role) | (is_org_admin & grants_below_admin))
rules.add_perm("accounts.move_person", is_portal_admin)
rules.add_perm("accounts.unlock_person", is_portal_admin)
rules.add_perm("accounts.manage_organisations", is_portal_admin)


def grantable_roles(actor) -> list[str]:  # noqa: ANN001
    """Return the roles the actor may give, most junior first (`accounts.grant_role`)."""
    return [role for role in Role if actor.has_perm("accounts.grant_role", role)]

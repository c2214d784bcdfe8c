"""Who may see and revoke API tokens; imported by `ApiConfig.ready()`."""

from __future__ import annotations

import rules

from core.accounts.predicates import is_portal_admin


@rules.predicate
def owns_token(user, token) -> bool:  # noqa: ANN001
    """Return whether the user owns the token."""
    return token is not None and user.pk is not None and token.owner_id == user.pk


rules.add_perm("api.revoke_token", owns_token | is_portal_admin)
rules.add_perm("api.list_all_tokens", is_portal_admin)

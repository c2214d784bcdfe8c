"""Writes and checks of personal API tokens.

A token reads `vmp_<prefix>_<secret>`: the prefix finds the row, the secret (32 random bytes)
is compared with its SHA-256 digest in constant time. Only the digest is stored; the whole
token is shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from core.errors import PortalError
from core.validators import free_text_problem

from .models import ApiToken

SCHEME = "vmp"
MAX_TOKENS = 20
LAST_USED_EVERY = timedelta(minutes=1)  # at most one write per token per minute


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_create(*, owner, name: str, read_only: bool = False,  # noqa: ANN001
                 expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Make a token for the owner; return it with its full text, which is never shown again."""
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = "Give the token a name, e.g. notebook or ci."
    elif len(name) > 64:
        errors["name"] = "Use at most 64 characters."
    elif problem := free_text_problem(name, what="name"):
        errors["name"] = problem
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "Choose an expiry in the future, or none."
    if errors:
        raise ValidationError(errors)
    if ApiToken.objects.filter(owner=owner).usable().count() >= MAX_TOKENS:
        raise PortalError(f"You have {MAX_TOKENS} tokens already; revoke one first.")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(owner=owner, name=name, prefix=prefix,
                                    secret_hash=_digest(secret), read_only=read_only,
                                    expires_at=expires_at)
    return token, f"{SCHEME}_{prefix}_{secret}"


def token_revoke(*, token: ApiToken, actor) -> ApiToken:  # noqa: ANN001
    """Revoke the token: it opens nothing from now on (its owner or an admin)."""
    if not actor.has_perm("api.revoke_token", token):
        raise PortalError("You may not revoke this token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.revoked_by = actor
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=token.revoked_at, revoked_by=actor)
    return token


def token_check(text: str) -> ApiToken | None:
    """Return the usable token this text is, with its owner; None for anything else."""
    parts = (text or "").split("_", 2)
    if len(parts) != 3 or parts[0] != SCHEME or not parts[1] or not parts[2]:
        return None
    token = (ApiToken.objects.usable().select_related("owner", "owner__organisation")
             .filter(prefix=parts[1]).first())
    if token is None or not hmac.compare_digest(token.secret_hash, _digest(parts[2])):
        return None
    if not token.owner.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token

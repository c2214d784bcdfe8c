"""Writes on accounts: roles, organisations, activation, and profiles from the directory."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import PortalError
from core.validators import free_text_clean, free_text_problem

from .keys import parse_public_key
from .models import ROLE_RANK, Organisation, Role, SSHKey, User

MAX_SSH_KEYS = 20


def higher_role(*roles: str) -> Role:
    """Return the most senior of the given roles (blank ones ignored); user if none."""
    known = [Role(r) for r in roles if r]
    return max(known, key=ROLE_RANK.__getitem__) if known else Role.USER


def _apply_role(user: User, role: Role) -> None:
    user.role = role
    # Admins manage the portal in Django admin too; nobody else does.
    user.is_staff = user.is_superuser = role == Role.ADMIN


def user_role_grant(*, user: User, role: str, actor: User) -> User:
    """Give the user a role; a directory user keeps a higher role the directory gives."""
    if role not in Role.values:
        raise ValidationError({"role": f"'{role}' is not a role."})
    if not actor.has_perm("accounts.manage_person", user):
        raise PortalError(f"You may not change {user.get_username()}'s role.")
    if not actor.has_perm("accounts.grant_role", role):
        raise PortalError(f"You may not make anyone {Role(role).label.lower()}.")
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if locked.is_directory_user:
            locked.granted_role = role
            locked.role_granted_by = actor
            locked.role_granted_at = timezone.now()
            _apply_role(locked, higher_role(locked.directory_role, role))
        else:
            _apply_role(locked, Role(role))
        locked.full_clean()
        locked.save()
    return locked


def user_set_active(*, user: User, active: bool, actor: User) -> User:
    """Let the user log in, or not."""
    if not actor.has_perm("accounts.manage_person", user):
        raise PortalError(f"You may not change {user.get_username()}.")
    if user.pk == actor.pk and not active:
        raise PortalError("You cannot deactivate your own account.")
    User.objects.filter(pk=user.pk).update(is_active=active)
    user.is_active = active
    return user


def user_login_failures(*, user: User) -> int:
    """Return the failed logins for the user's name the throttle still counts."""
    from axes.models import AccessAttempt
    from django.conf import settings
    from django.db.models import Sum

    from .backends import throttle_username

    since = timezone.now() - settings.AXES_COOLOFF_TIME
    name = throttle_username(None, {"username": user.get_username()})
    return AccessAttempt.objects.filter(username=name, attempt_time__gte=since) \
        .aggregate(n=Sum("failures_since_start"))["n"] or 0


def user_login_unlock(*, user: User, actor: User) -> int:
    """Forget the failed logins for the user's name, so the throttle lets them in again."""
    from axes.utils import reset

    from .backends import throttle_username

    if not actor.has_perm("accounts.unlock_person", user):
        raise PortalError(f"You may not unlock {user.get_username()}.")
    return reset(username=throttle_username(None, {"username": user.get_username()}))


def user_set_organisation(*, user: User, organisation: Organisation | None,
                          actor: User) -> User:
    """Move the user to another organisation (admins)."""
    if not actor.has_perm("accounts.move_person", user):
        raise PortalError("Only an admin moves people between organisations.")
    User.objects.filter(pk=user.pk).update(organisation=organisation)
    user.organisation = organisation
    return user


def organisation_create(*, name: str, actor: User) -> Organisation:
    """Add an organisation (admins)."""
    if not actor.has_perm("accounts.manage_organisations"):
        raise PortalError("Only an admin adds organisations.")
    name = name.strip()
    if problem := free_text_problem(name, what="name"):
        raise ValidationError({"name": problem})
    org = Organisation(name=name, slug=slugify(name)[:60])
    try:
        org.full_clean()
    except ValidationError as exc:
        if "slug" in exc.message_dict and "name" not in exc.message_dict:
            raise ValidationError({"name": "An organisation with a name like this exists."}) \
                from exc
        raise
    org.save()
    return org


def organisation_for_directory(name: str) -> Organisation | None:
    """Return the organisation the directory names, creating it on first sight."""
    # The directory's word is taken, not argued with: drop what a name may not hold.
    name = " ".join(free_text_clean(name, multiline=True).split())[:120]
    if not name:
        return None
    org = Organisation.objects.filter(name__iexact=name).first()
    if org is not None:
        return org
    slug = slugify(name)[:60] or "organisation"
    base, n = slug, 1
    while Organisation.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base[:55]}-{n}"
    return Organisation.objects.create(name=name, slug=slug)


def directory_profile_apply(*, user: User, group_dns: set[str], attributes: dict,
                            role_groups: dict[str, str], org_attribute: str) -> None:
    """Set the role and organisation a directory login gives; the caller saves the user."""
    directory_role = Role.USER
    for role in (Role.ADMIN, Role.ORG_ADMIN, Role.FACULTY):
        group = role_groups.get(role.value, "")
        if group and group in group_dns:
            directory_role = role
            break
    user.is_directory_user = True
    user.directory_role = directory_role
    _apply_role(user, higher_role(directory_role, user.granted_role))
    values = attributes.get(org_attribute) or attributes.get(org_attribute.lower()) or []
    if values:
        user.organisation = organisation_for_directory(str(values[0]))


def ssh_key_add(*, owner: User, name: str, public_key: str) -> SSHKey:
    """Check a public key and keep it in the owner's profile."""
    errors: dict[str, str] = {}
    try:
        key = parse_public_key(public_key)
    except ValidationError as exc:
        raise ValidationError({"public_key": exc.messages}) from exc
    name = " ".join((name or "").split()) or key.comment[:64] or key.key_type
    if not name.isprintable():
        errors["name"] = "Give the key a name of printable text."
    if owner.ssh_keys.filter(fingerprint=key.fingerprint).exists():
        errors["public_key"] = f"You already have this key ({key.fingerprint})."
    if owner.ssh_keys.count() >= MAX_SSH_KEYS:
        errors["public_key"] = f"You have {MAX_SSH_KEYS} keys, the most one may keep; " \
                               "delete one first."
    if errors:
        raise ValidationError(errors)
    record = SSHKey(owner=owner, name=name[:64], key_type=key.key_type, public_key=key.line,
                    bits=key.bits, fingerprint=key.fingerprint)
    record.full_clean()
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError as exc:  # the same key added twice at once
        raise ValidationError({"public_key": f"You already have this key "
                                             f"({key.fingerprint})."}) from exc
    return record


def ssh_key_delete(*, key: SSHKey, actor: User) -> None:
    """Remove a key from its owner's profile; VMs already given it keep it."""
    if key.owner_id != actor.pk:
        raise PortalError("You may only delete your own keys.")
    key.delete()

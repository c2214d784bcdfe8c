"""Users, their roles and their organisations."""

from __future__ import annotations

import rules
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from .predicates import is_org_admin, is_portal_admin


class Organisation(models.Model):
    """A department, faculty or group whose members request VMs."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=60, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    """A user's place in the approval chain, most junior first."""

    USER = "user", "User"
    FACULTY = "faculty", "Faculty"
    ORG_ADMIN = "org_admin", "Org-admin"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.USER: 0, Role.FACULTY: 1, Role.ORG_ADMIN: 2, Role.ADMIN: 3}


class PeopleQuerySet(models.QuerySet):
    """Accounts, narrowed to those a user manages."""

    def visible_to(self, actor) -> PeopleQuerySet:  # noqa: ANN001
        """Narrow to the people the actor manages: all for admins, their members for org-admins."""
        if is_portal_admin.test(actor):
            return self.all()
        if is_org_admin.test(actor):
            return self.filter(organisation_id=actor.organisation_id)
        return self.none()


class User(AbstractUser):
    """A person who logs in to the portal."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER,
                            help_text="The role in force: the higher of directory and portal.")
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="members"
    )
    is_directory_user = models.BooleanField(
        default=False, help_text="Logs in with the directory password (LDAP).")
    directory_role = models.CharField(
        max_length=16, choices=Role.choices, blank=True,
        help_text="The role the directory's groups gave at the last login.")
    granted_role = models.CharField(
        max_length=16, choices=Role.choices, blank=True,
        help_text="A role an admin gave in the portal; kept unless the directory gives more.")
    role_granted_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    role_granted_at = models.DateTimeField(null=True, blank=True)

    # Django's UserManager stays the default manager (declared here so that it comes first,
    # as migrations record it); `people` narrows accounts to those a user manages.
    objects = UserManager()
    people = PeopleQuerySet.as_manager()

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username

    @property
    def rank(self) -> int:
        """Return the role's seniority, 0 for a user and 3 for an admin."""
        return ROLE_RANK[Role(self.role)]

    @property
    def role_source(self) -> str:
        """Return where the role in force comes from: local, directory or portal."""
        if not self.is_directory_user:
            return "local"
        if self.granted_role and (not self.directory_role
                                  or ROLE_RANK[Role(self.granted_role)]
                                  > ROLE_RANK[Role(self.directory_role)]):
            return "portal"
        return "directory"

    @property
    def is_portal_admin(self) -> bool:
        """Return whether the user administers the whole portal."""
        return self.role == Role.ADMIN or self.is_superuser

    @property
    def is_org_admin(self) -> bool:
        """Return whether the user is the org-admin of an organisation."""
        return self.role == Role.ORG_ADMIN and self.organisation_id is not None

    def has_perm(self, perm: str, obj: object = None) -> bool:
        """Answer the portal's rules for superusers too; Django's own permissions as before."""
        # Django lets an active superuser do anything, but nobody decides their own request
        # or reads another's VM password, admins included: the rules say so.
        if rules.perm_exists(perm):
            return rules.has_perm(perm, self, obj)
        return super().has_perm(perm, obj)


class SSHKeyQuerySet(models.QuerySet):
    """SSH keys, narrowed to their owner's."""

    def visible_to(self, user) -> SSHKeyQuerySet:  # noqa: ANN001
        """Narrow to the user's own keys: nobody else sees or deletes them, not even admins."""
        return self.filter(owner_id=user.pk) if user.is_authenticated else self.none()


class SSHKey(models.Model):
    """An SSH public key a user keeps in their profile, to be given to their VMs."""

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=64, help_text="Your name for it, e.g. laptop.")
    key_type = models.CharField(max_length=32)
    public_key = models.TextField(help_text="The whole public key line: type, data, comment.")
    bits = models.PositiveIntegerField()
    fingerprint = models.CharField(max_length=80, help_text="SHA256, as ssh-keygen -l shows it.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SSHKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "SSH key"
        constraints = [
            models.UniqueConstraint(fields=["owner", "fingerprint"],
                                    name="%(app_label)s_%(class)s_unique_fingerprint"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"

    @property
    def comment(self) -> str:
        """Return the comment at the end of the key line, if any."""
        parts = self.public_key.split(None, 2)
        return parts[2] if len(parts) > 2 else ""

"""Personal API tokens: a secret shown once, kept only as its SHA-256 digest."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiTokenQuerySet(models.QuerySet):
    """Tokens, narrowed to those a user sees."""

    def visible_to(self, user) -> ApiTokenQuerySet:  # noqa: ANN001
        """Narrow to the user's own tokens; admins see everyone's."""
        if not user.is_authenticated:
            return self.none()
        if getattr(user, "is_portal_admin", False):
            return self.all()
        return self.filter(owner_id=user.pk)

    def usable(self) -> ApiTokenQuerySet:
        """Keep the tokens neither revoked nor expired."""
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).exclude(expires_at__lte=now)


class ApiToken(models.Model):
    """A personal token: whoever holds it acts as its owner, with the owner's role exactly."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="api_tokens")
    name = models.CharField(max_length=64, help_text="Your name for it, e.g. notebook.")
    prefix = models.CharField(max_length=16, unique=True, editable=False,
                              help_text="The public part of the token, to find it.")
    secret_hash = models.CharField(max_length=64, editable=False,
                                   help_text="SHA-256 of the secret part; the secret is not kept.")
    read_only = models.BooleanField(default=False,
                                    help_text="Only reads (GET, HEAD, OPTIONS) are allowed.")
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        """Return whether the token's expiry has passed."""
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        """Return whether the token still opens the API."""
        return self.revoked_at is None and not self.is_expired

    @property
    def status(self) -> str:
        """Return 'active', 'expired' or 'revoked', as the token pages show it."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"

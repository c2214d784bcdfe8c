"""Single-use tokens that let one browser open one console of one VM."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ConsoleKind(models.TextChoices):
    """Which console a token opens."""

    VNC = "vnc", "Graphical console"
    SERIAL = "serial", "Serial console"


class ConsoleToken(models.Model):
    """A console ticket: only its SHA-256 is kept; the token itself goes to the browser once."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="console_tokens")
    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.CASCADE,
                           related_name="console_tokens")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE,
                             related_name="console_tokens")
    kind = models.CharField(max_length=8, choices=ConsoleKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    uses = models.PositiveIntegerField(default=0, help_text="Connections opened with it.")
    open_connections = models.PositiveIntegerField(default=0)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    origin = models.CharField(max_length=255, blank=True,
                              help_text="Origin of the page that used it.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "open_connections"], name="console_token_user_open"),
            models.Index(fields=["expires_at"], name="console_token_expires"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.vm_id} for {self.user_id}"

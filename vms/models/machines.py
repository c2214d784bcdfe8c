"""Virtual machines as the portal last observed them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from hosts.models import NAME_VALIDATOR


class VMState(models.TextChoices):
    """The VM's last observed state."""

    PENDING = "pending", "Pending install"
    INSTALLING = "installing", "Installing"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Suspended"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    FAILED = "failed", "Install failed"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"
    UNKNOWN = "unknown", "Unknown"


LIVE_STATES = [s for s in VMState.values if s != VMState.DELETED]


class VirtualMachine(models.Model):
    """A VM the portal installed (or is installing) from an approved request."""

    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="vms"
    )
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.PROTECT, related_name="vms"
    )
    request = models.OneToOneField(
        "vms.VMRequest", on_delete=models.PROTECT, null=True, blank=True, related_name="vm"
    )
    template = models.ForeignKey("hosts.Template", on_delete=models.PROTECT)
    host = models.ForeignKey(
        "hosts.Host", on_delete=models.PROTECT, null=True, blank=True, related_name="vms"
    )
    datastore = models.ForeignKey(
        "hosts.Datastore", on_delete=models.PROTECT, null=True, blank=True, related_name="vms"
    )
    vcpus = models.PositiveIntegerField("vCPUs")
    memory_mib = models.PositiveIntegerField("RAM (MiB)")
    disk_gib = models.PositiveIntegerField("disk (GiB)")
    purpose = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=VMState.choices, default=VMState.PENDING)
    state_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "virtual machine"
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~models.Q(state="deleted"),
                name="%(app_label)s_%(class)s_live_name",
            ),
        ]
        indexes = [models.Index(fields=["owner", "state"], name="vms_vm_owner_state")]

    def __str__(self) -> str:
        return self.name

    @property
    def domain_name(self) -> str:
        """Return the libvirt domain name of this VM."""
        return self.name

    @property
    def volume_name(self) -> str:
        """Return the name of the VM's root disk volume, made by the portal."""
        return f"vm-{self.uuid.hex}.qcow2"

    @property
    def is_live(self) -> bool:
        """Return whether the VM still exists (not deleted)."""
        return self.state != VMState.DELETED

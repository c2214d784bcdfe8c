"""Virtual machines as the portal last observed them."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.accounts.predicates import narrow_to
from hosts.models import NAME_VALIDATOR


def _vnc_password() -> str:
    return secrets.token_urlsafe(6)[:8]


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


class VirtualMachineQuerySet(models.QuerySet):
    """VMs, narrowed to those a user may see."""

    def visible_to(self, user) -> VirtualMachineQuerySet:  # noqa: ANN001
        """Narrow to the user's VMs, those of requests they approve, their org's as org-admin."""
        return narrow_to(self, user, Q(owner_id=user.pk) | Q(request__faculty_id=user.pk))

    def live(self) -> VirtualMachineQuerySet:
        """Narrow to the VMs not deleted: those that hold room on a host and a datastore."""
        return self.exclude(state=VMState.DELETED)


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
    security_domain = models.ForeignKey(
        "networking.SecurityDomain", on_delete=models.PROTECT, null=True, blank=True,
        related_name="vms",
    )
    vnc_port = models.PositiveIntegerField("VNC port", null=True, blank=True)
    vnc_password = models.CharField("VNC password", max_length=8, blank=True,
                                    default=_vnc_password, editable=False)
    clone_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="clones")
    sizes_pending_restart = models.BooleanField(
        default=False, help_text="New vCPU and RAM sizes take effect at the next start.")
    vcpus = models.PositiveIntegerField("vCPUs")
    memory_mib = models.PositiveIntegerField("RAM (MiB)")
    disk_gib = models.PositiveIntegerField("disk (GiB)")
    purpose = models.TextField(blank=True)
    login_user = models.CharField(
        max_length=32, blank=True,
        help_text="The user cloud-init creates in the guest, named after the owner.")
    login_keys = models.JSONField(
        "SSH keys", default=list, blank=True,
        help_text="The keys given to the guest: name, fingerprint and key line of each.")
    password_hash = models.CharField(max_length=200, blank=True, editable=False,
                                     help_text="SHA-512 crypt hash of the generated password.")
    # The generated password in clear, kept only until its owner has seen it once.
    password_once = models.CharField(max_length=64, blank=True, editable=False)
    state = models.CharField(max_length=16, choices=VMState.choices, default=VMState.PENDING)
    state_checked_at = models.DateTimeField(null=True, blank=True)
    attention = models.TextField(
        blank=True, help_text="What an operation that died half-way left behind; empty when "
                              "nothing needs an administrator's or the owner's attention.")
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "virtual machine"
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=~models.Q(state="deleted"),
                name="%(app_label)s_%(class)s_live_name",
            ),
            models.UniqueConstraint(
                fields=["host", "vnc_port"],
                condition=models.Q(vnc_port__isnull=False),
                name="%(app_label)s_%(class)s_host_vnc_port",
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
    def seed_volume_name(self) -> str:
        """Return the name of the VM's cloud-init seed volume, next to its disk."""
        return f"vm-{self.uuid.hex}-seed.iso"

    @property
    def private_ip(self) -> object | None:
        """Return the VM's current private address (the newest, while it moves)."""
        ips = list(self.private_ips.all())  # uses a prefetch when the list page made one
        if not ips:
            return None
        return max(ips, key=lambda ip: (ip.allocated_at.timestamp() if ip.allocated_at else 0,
                                        ip.pk))

    @property
    def is_live(self) -> bool:
        """Return whether the VM still exists (not deleted)."""
        return self.state != VMState.DELETED

"""Durable intent: every action on a hypervisor is first an Operation row."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.accounts.predicates import narrow_to


class OperationKind(models.TextChoices):
    """What an operation does."""

    INSTALL = "install", "Install"
    START = "start", "Start"
    SHUTDOWN = "shutdown", "Shut down"
    DESTROY = "destroy", "Force off"
    REBOOT = "reboot", "Reboot"
    SUSPEND = "suspend", "Suspend"
    RESUME = "resume", "Resume"
    DELETE = "delete", "Delete"
    NETWORK_MOVE = "network_move", "Move to another security domain"
    PUBLIC_IP_ATTACH = "public_ip_attach", "Attach a public IP"
    PUBLIC_IP_RELEASE = "public_ip_release", "Release the public IP"
    SSH_PORT_ATTACH = "ssh_port_attach", "Forward an SSH port"
    SSH_PORT_RELEASE = "ssh_port_release", "Release the SSH port"
    SNAPSHOT_CREATE = "snapshot_create", "Take a snapshot"
    SNAPSHOT_REVERT = "snapshot_revert", "Revert to a snapshot"
    SNAPSHOT_DELETE = "snapshot_delete", "Delete a snapshot"
    CLONE = "clone", "Clone"
    DISK_ADD = "disk_add", "Add a disk"
    DISK_DETACH = "disk_detach", "Detach a disk"
    DISK_DELETE = "disk_delete", "Delete a disk"
    RESIZE = "resize", "Resize"
    SAVE_TEMPLATE = "save_template", "Save as template"
    MIGRATE = "migrate", "Migrate"
    HOST_REFRESH = "host_refresh", "Refresh host"
    NAT_RESYNC = "nat_resync", "Re-apply NAT mappings"
    HOST_DOWN = "host_down", "Health check"
    HOST_POWER_ON = "host_power_on", "Power on"
    HOST_POWER_OFF = "host_power_off", "Power off"
    DOMAIN_ADOPT = "domain_adopt", "Adopt an orphan domain"
    DOMAIN_REMOVE = "domain_remove", "Delete an orphan domain"
    VOLUME_REMOVE = "volume_remove", "Delete an orphan volume"
    VM_LOST = "vm_lost", "Mark as lost"
    VM_RECREATE = "vm_recreate", "Recreate from its disk"
    # Respawning a dead host's VMs elsewhere (vms.services.respawn).
    HOST_RESPAWN = "host_respawn", "Respawn VMs of host"
    # Host maintenance that moves the host's VMs away (vms.services.evacuation).
    EVACUATE = "evacuate", "Evacuate host"
    # Whole-cloud shutdown and bootup (vms.services.cloud_power).
    CLOUD_SHUTDOWN = "cloud_shutdown", "Shut down the cloud"
    CLOUD_BOOTUP = "cloud_bootup", "Boot up the cloud"


class OperationStatus(models.TextChoices):
    """Where an operation stands."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


ACTIVE_STATUSES = (OperationStatus.QUEUED, OperationStatus.RUNNING)


# Which operations a user sees on each kind of target, registered by the application that
# owns the target (`vms.rules`: those on the VMs the user sees).
_VISIBLE_TARGETS: list[Callable[[object], Q]] = []


def visible_targets_register(select: Callable[[object], Q]) -> None:
    """Register a function selecting the operations a user sees on one kind of target."""
    _VISIBLE_TARGETS.append(select)


class OperationQuerySet(models.QuerySet):
    """Reads of operations."""

    def visible_to(self, user) -> OperationQuerySet:  # noqa: ANN001
        """Narrow to the operations on targets the user sees, or that the user asked for."""
        q = Q(requested_by_id=user.pk)
        for select in _VISIBLE_TARGETS:
            q |= select(user)
        return narrow_to(self, user, q, organisation=None)

    def active(self) -> OperationQuerySet:
        """Return the operations queued or running."""
        return self.filter(status__in=ACTIVE_STATUSES)

    def needing_attention(self) -> OperationQuerySet:
        """Return the failed operations admins should look at: not dismissed, not routine."""
        return self.filter(status=OperationStatus.FAILED, dismissed=False, routine=False)


class AdminAlert(models.TextChoices):
    """Whether admins must hear of an operation's failure, and whether they have."""

    NONE = "", "Not needed"
    PENDING = "pending", "Waiting for the next digest"
    SENT = "sent", "Mailed"


class Operation(models.Model):
    """One action on a VM or host, queued -> running -> succeeded | failed."""

    kind = models.CharField(max_length=24, choices=OperationKind.choices)
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.PROTECT, null=True, blank=True,
        related_name="operations",
    )
    host = models.ForeignKey(
        "hosts.Host", on_delete=models.PROTECT, null=True, blank=True, related_name="operations"
    )
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children",
        help_text="The operation that drives this one (evacuate a host, shut down the cloud).",
    )
    arguments = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=OperationStatus.choices, default=OperationStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)
    detail = models.TextField(
        blank=True, help_text="The hypervisor's own account of a failure, for administrators.",
    )
    progress = models.CharField(max_length=200, blank=True, help_text="The step under way.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="operations",
    )
    dismissed = models.BooleanField(default=False)
    routine = models.BooleanField(
        default=False,
        help_text="A failure its owner can act on alone (a guest that ignored a shut down), "
                  "declared routine by the kind's spec: kept out of the admins' attention "
                  "list and failure counts, still shown in the VM's history.")
    superseded_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="superseded",
        help_text="The operation that cut this one short (a Force off asked for while a shut "
                  "down waited): its worker stops waiting when it sees this.")
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="When the worker running it last said it is alive.")
    steps = models.JSONField(
        default=list, blank=True,
        help_text="What the run has taken so far, recorded before each step is taken, so "
                  "that another process can give it back if the worker dies.")
    admin_alert = models.CharField(max_length=8, choices=AdminAlert.choices, blank=True,
                                   default=AdminAlert.NONE)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        # Moved from the vms application with its rows: the table and its names stay.
        db_table = "vms_operation"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "enqueued_at"], name="vms_operation_status_enq"),
            models.Index(fields=["vm", "status"], name="vms_operation_vm_status"),
            models.Index(fields=["admin_alert"], condition=models.Q(admin_alert="pending"),
                         name="vms_operation_alert_pending"),
        ]
        constraints = [
            # One operation at a time per VM: two workers never act on one domain at once.
            models.UniqueConstraint(
                fields=["vm"],
                condition=models.Q(status__in=["queued", "running"]),
                name="vms_operation_one_active_per_vm",
            ),
        ]

    def __str__(self) -> str:
        target = self.vm or self.host or "-"
        return f"{self.get_kind_display()} {target} ({self.get_status_display()})"

    @property
    def is_active(self) -> bool:
        """Return whether the operation is queued or running."""
        return self.status in ACTIVE_STATUSES

    def children_progress(self) -> dict[str, int]:
        """Return how many child operations stand in each status (empty without children)."""
        # Counted from `children.all()`, so a list that prefetches the children asks once.
        counts = Counter(child.status for child in self.children.all())
        return {status: counts[status] for status in OperationStatus.values if counts[status]}

    @property
    def children_summary(self) -> str:
        """Return the children's progress in words ("2 done, 1 running"), or ""."""
        labels = dict(OperationStatus.choices)
        return ", ".join(f"{n} {labels[status].lower()}"
                         for status, n in self.children_progress().items())


class AlertDigest(models.Model):
    """When a digest of failures last went to a group of recipients (one row per group)."""

    name = models.CharField(max_length=32, unique=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "vms_alertdigest"  # moved from the vms application with its rows

    def __str__(self) -> str:
        return f"{self.name}: {self.last_sent_at or 'never'}"

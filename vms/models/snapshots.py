"""Snapshots, snapshot schedules and extra disks of VMs."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from core.accounts.predicates import is_portal_admin

from .machines import VirtualMachine


class OfVMQuerySet(models.QuerySet):
    """Rows that belong to a VM (snapshots, schedules, disks): seen with their VM."""

    def visible_to(self, user) -> OfVMQuerySet:  # noqa: ANN001
        """Narrow to the rows of VMs the user may see."""
        if is_portal_admin.test(user):
            return self.all()
        return self.filter(vm__in=VirtualMachine.objects.visible_to(user))


class SnapshotKind(models.TextChoices):
    """Who took a snapshot: the owner, or one of the VM's schedules."""

    MANUAL = "manual", "Manual"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"


class SnapshotState(models.TextChoices):
    """Where a snapshot stands."""

    CREATING = "creating", "Being taken"
    READY = "ready", "Ready"
    DELETING = "deleting", "Being deleted"


def _snapshot_name() -> str:
    return f"snap-{secrets.token_hex(6)}"


class Snapshot(models.Model):
    """An internal qcow2 snapshot of a VM, named by the portal; the user's words are labels."""

    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.CASCADE,
                           related_name="snapshots")
    name = models.CharField(max_length=64, help_text="The owner's name for it.")
    description = models.TextField(max_length=500, blank=True)
    libvirt_name = models.CharField(max_length=40, default=_snapshot_name, editable=False)
    kind = models.CharField(max_length=16, choices=SnapshotKind.choices,
                            default=SnapshotKind.MANUAL)
    state = models.CharField(max_length=16, choices=SnapshotState.choices,
                             default=SnapshotState.CREATING)
    vm_state = models.CharField(max_length=16, blank=True,
                                help_text="Whether the VM ran when it was taken.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OfVMQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "libvirt_name"],
                                    name="%(app_label)s_%(class)s_unique_libvirt_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.vm})"


class SnapshotSchedule(models.Model):
    """A VM's standing order for a daily, weekly or monthly snapshot."""

    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.CASCADE,
                           related_name="snapshot_schedules")
    frequency = models.CharField(max_length=16, choices=[
        (k.value, k.label) for k in SnapshotKind if k != SnapshotKind.MANUAL])
    last_taken_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OfVMQuerySet.as_manager()

    class Meta:
        ordering = ["vm", "frequency"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "frequency"],
                                    name="%(app_label)s_%(class)s_one_per_frequency"),
        ]

    def __str__(self) -> str:
        return f"{self.get_frequency_display()} snapshots of {self.vm}"


class DiskState(models.TextChoices):
    """Where an extra disk stands."""

    CREATING = "creating", "Being created"
    ATTACHED = "attached", "Attached"
    DETACHED = "detached", "Detached"
    DELETING = "deleting", "Being deleted"


def _volume_name() -> str:
    return f"disk-{secrets.token_hex(8)}.qcow2"


class ExtraDisk(models.Model):
    """A qcow2 volume of its own attached to a VM."""

    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.PROTECT,
                           related_name="extra_disks")
    datastore = models.ForeignKey("hosts.Datastore", on_delete=models.PROTECT,
                                  related_name="extra_disks")
    size_gib = models.PositiveIntegerField("size (GiB)")
    volume_name = models.CharField(max_length=64, default=_volume_name, unique=True,
                                   editable=False)
    target = models.CharField(max_length=8, blank=True, help_text="vdb, vdc, ...")
    state = models.CharField(max_length=16, choices=DiskState.choices,
                             default=DiskState.CREATING)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OfVMQuerySet.as_manager()

    class Meta:
        ordering = ["vm", "target", "id"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "target"], condition=~models.Q(target=""),
                                    name="%(app_label)s_%(class)s_unique_target"),
        ]

    def __str__(self) -> str:
        return f"{self.size_gib} GiB disk of {self.vm}"

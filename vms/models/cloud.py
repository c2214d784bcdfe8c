"""The record of a whole-cloud shutdown: which hosts and exactly which VMs, and how far each got.

One record is open from the moment a shutdown is asked for until its bootup has finished;
while it is open the portal starts no VM. Its rows are the only memory of which VMs ran:
a shutdown asked again continues from them, and the bootup resumes exactly them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class CloudShutdown(models.Model):
    """One whole-cloud shutdown and the bootup that ends it."""

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")
    started_at = models.DateTimeField(auto_now_add=True)
    listed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the VMs running on every host were recorded.")
    shut_down_at = models.DateTimeField(
        null=True, blank=True, help_text="When every recorded VM was saved and the hosts off.")
    bootup_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When the bootup finished: the cloud is back.")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # At most one shutdown open at a time.
            models.UniqueConstraint(fields=["finished_at"],
                                    condition=models.Q(finished_at__isnull=True),
                                    name="vms_cloudshutdown_one_open"),
        ]

    def __str__(self) -> str:
        return f"Cloud shutdown of {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def snapshot_name(self) -> str:
        """Return the name of the internal snapshot this shutdown takes of every running VM."""
        return f"cloud-shutdown-{self.pk}"


class CloudHostStage(models.TextChoices):
    """How far one host got."""

    LISTED = "listed", "Its running VMs recorded"
    OFF = "off", "Powered off"
    LEFT_ON = "left_on", "Left on (no power method)"
    UP = "up", "Back up"


class CloudShutdownHost(models.Model):
    """One host of a shutdown: its status before, and whether it was powered off."""

    shutdown = models.ForeignKey(CloudShutdown, on_delete=models.CASCADE, related_name="hosts")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    prior_status = models.CharField(max_length=16)
    stage = models.CharField(max_length=16, choices=CloudHostStage.choices,
                             default=CloudHostStage.LISTED)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["host__name", "id"]
        constraints = [models.UniqueConstraint(fields=["shutdown", "host"],
                                               name="vms_cloudshutdownhost_once")]

    def __str__(self) -> str:
        return f"{self.host} ({self.get_stage_display()})"


class CloudVMStage(models.TextChoices):
    """How far one VM got: saved once, resumed once, its snapshot removed once."""

    LISTED = "listed", "Running; to be saved"
    SAVED = "saved", "Saved and off; to be resumed"
    RESUMED = "resumed", "Resumed; snapshot to remove"
    DONE = "done", "Resumed"
    SKIPPED = "skipped", "Not resumed"


class CloudShutdownVM(models.Model):
    """One VM that ran (or was suspended) when the shutdown began: only these are resumed."""

    shutdown = models.ForeignKey(CloudShutdown, on_delete=models.CASCADE, related_name="vms")
    vm = models.ForeignKey("vms.VirtualMachine", on_delete=models.CASCADE, related_name="+")
    host = models.ForeignKey("hosts.Host", on_delete=models.PROTECT, related_name="+")
    prior_state = models.CharField(max_length=16)
    # The host's own snapshot (not a user's `Snapshot`): no limit counts it, no list shows it.
    snapshot_name = models.CharField(max_length=40)
    stage = models.CharField(max_length=16, choices=CloudVMStage.choices,
                             default=CloudVMStage.LISTED)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["vm__name", "id"]
        constraints = [models.UniqueConstraint(fields=["shutdown", "vm"],
                                               name="vms_cloudshutdownvm_once")]

    def __str__(self) -> str:
        return f"{self.vm} ({self.get_stage_display()})"

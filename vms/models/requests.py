"""Requests for new VMs and the approval steps they pass through."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.accounts.predicates import is_org_admin, is_portal_admin, narrow_to
from hosts.models import NAME_VALIDATOR


class RequestStage(models.TextChoices):
    """Where a request stands in the approval chain."""

    FACULTY = "faculty", "Awaiting faculty"
    ORG_ADMIN = "org_admin", "Awaiting org-admin"
    ADMIN = "admin", "Awaiting admin"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


PENDING_STAGES = (RequestStage.FACULTY, RequestStage.ORG_ADMIN, RequestStage.ADMIN)


class RequestKind(models.TextChoices):
    """What a request asks for: a new VM, or a change to one."""

    NEW = "new", "New VM"
    NETWORK = "network", "Move to another security domain"
    PUBLIC_IP = "public_ip", "Public IP address"
    RESIZE = "resize", "Resize"
    DISK = "disk", "Extra disk"
    CLONE = "clone", "Clone"
    SSH_PORT = "ssh_port", "Forwarded SSH port"


class Decision(models.TextChoices):
    """What an approver decided."""

    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


class VMRequestQuerySet(models.QuerySet):
    """Requests, narrowed to those a user may see or must decide."""

    def visible_to(self, user) -> VMRequestQuerySet:  # noqa: ANN001
        """Narrow to the user's requests, those naming them faculty, their org's as org-admin."""
        return narrow_to(self, user, Q(requester_id=user.pk) | Q(faculty_id=user.pk))

    def awaiting(self, user) -> VMRequestQuerySet:  # noqa: ANN001
        """Narrow to the requests waiting for this user's decision."""
        if not user.is_authenticated:
            return self.none()
        # Never one's own request: another approver must decide it.
        qs = self.exclude(requester_id=user.pk)
        if is_portal_admin.test(user):
            return qs.filter(stage__in=[RequestStage.FACULTY, RequestStage.ORG_ADMIN,
                                        RequestStage.ADMIN])
        q = Q(stage=RequestStage.FACULTY, faculty_id=user.pk)
        if is_org_admin.test(user):
            q |= Q(stage=RequestStage.ORG_ADMIN, organisation_id=user.organisation_id)
        return qs.filter(q)


class VMRequest(models.Model):
    """A person's request for a new VM."""

    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="vm_requests"
    )
    organisation = models.ForeignKey(
        "accounts.Organisation", on_delete=models.PROTECT, related_name="vm_requests"
    )
    faculty = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
        related_name="faculty_requests", help_text="The faculty who approves first.",
    )
    kind = models.CharField(max_length=16, choices=RequestKind.choices, default=RequestKind.NEW)
    target = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.PROTECT, null=True, blank=True,
        related_name="change_requests", help_text="The VM a change request is about.",
    )
    name = models.CharField(max_length=63, validators=[NAME_VALIDATOR])
    template = models.ForeignKey("hosts.Template", on_delete=models.PROTECT)
    security_domain = models.ForeignKey(
        "networking.SecurityDomain", on_delete=models.PROTECT, null=True, blank=True,
        help_text="Where the VM's network goes (for a move: the new domain).",
    )
    public_ip = models.BooleanField("public IP", default=False,
                                    help_text="Reach the VM from outside through NAT.")
    params = models.JSONField(default=dict, blank=True)
    ssh_keys = models.JSONField(
        "SSH keys", default=list, blank=True,
        help_text="The requester's keys the VM gets: name, fingerprint and key line of each, "
                  "as they were when the request was made.")
    generate_password = models.BooleanField(
        default=False, help_text="Give the VM's user a generated password, shown once.")
    vcpus = models.PositiveIntegerField("vCPUs")
    memory_mib = models.PositiveIntegerField("RAM (MiB)")
    disk_gib = models.PositiveIntegerField("disk (GiB)")
    purpose = models.TextField()
    stage = models.CharField(max_length=16, choices=RequestStage.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VMRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "VM request"
        indexes = [models.Index(fields=["stage", "organisation"], name="vms_vmrequest_stage_org")]
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(stage__in=["faculty", "org_admin", "admin"], kind="new"),
                name="%(app_label)s_%(class)s_pending_name",
            ),
            models.UniqueConstraint(
                fields=["target"],
                condition=models.Q(stage__in=["faculty", "org_admin", "admin"])
                & ~models.Q(kind="new"),
                name="%(app_label)s_%(class)s_one_pending_change",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_stage_display()})"

    @property
    def is_change(self) -> bool:
        """Return whether the request changes an existing VM."""
        return self.kind != RequestKind.NEW

    @property
    def summary(self) -> str:
        """Return one line saying what the request asks for."""
        if self.kind == RequestKind.NETWORK:
            return f"Move {self.name} to security domain {self.security_domain}"
        if self.kind == RequestKind.PUBLIC_IP:
            return f"Give {self.name} a public IP address"
        if self.kind == RequestKind.SSH_PORT:
            return f"Forward an SSH port to {self.name}"
        if self.kind == RequestKind.RESIZE:
            move = " (it moves to a host with room)" if self.params.get("move") else ""
            return (f"Resize {self.name} to {self.params.get('vcpus')} vCPUs and "
                    f"{self.params.get('memory_mib')} MiB{move}")
        if self.kind == RequestKind.DISK:
            return f"Add a {self.params.get('size_gib')} GiB disk to {self.name}"
        if self.kind == RequestKind.CLONE:
            names = ", ".join(self.params.get("names", []))
            return f"Clone {self.name} as {names}"
        extra = " with a public IP" if self.public_ip else ""
        return (f"{self.template} · {self.vcpus} vCPUs · {self.memory_mib} MiB · "
                f"{self.disk_gib} GiB{extra}")

    @property
    def is_pending(self) -> bool:
        """Return whether the request still waits for someone."""
        return self.stage in PENDING_STAGES


class ApprovalStep(models.Model):
    """One decision on a request: who, when, what, why."""

    request = models.ForeignKey(VMRequest, on_delete=models.CASCADE, related_name="steps")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    stage = models.CharField(max_length=16, choices=RequestStage.choices)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} by {self.actor} at {self.stage}"

"""Django admin for requests, VMs and operations: read-only.

Requests climb the approval chain and VMs change only through Operations, so the admin only
shows them: no add, no change, no delete (the portal's pages and services do those).
"""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from operations.models import Operation

from .models import ApprovalStep, VirtualMachine, VMRequest


class ReadOnlyMixin:
    """Allow viewing only: every write goes through the portal's services."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Refuse adding: a row made here would bypass the approval chain and the engine."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Refuse changing: states and sizes change only through Operations."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Refuse deleting: a VM is deleted by its delete operation, which frees what it holds."""
        return False


class VisibleMixin:
    """List only the rows the user sees in the portal: the admin asks `visible_to` too."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Narrow the rows to those the portal shows this user."""
        return super().get_queryset(request).visible_to(request.user)


class ApprovalStepInline(ReadOnlyMixin, admin.TabularInline):
    """Show a request's decisions."""

    model = ApprovalStep
    extra = 0
    readonly_fields = ("actor", "stage", "decision", "reason", "created_at")
    can_delete = False


@admin.register(VMRequest)
class VMRequestAdmin(VisibleMixin, ReadOnlyMixin, admin.ModelAdmin):
    """See requests; decisions are taken in the portal, where the chain is enforced."""

    list_display = ("name", "requester", "organisation", "stage", "created_at")
    list_filter = ("stage", "organisation")
    search_fields = ("name", "requester__username")
    inlines = [ApprovalStepInline]


@admin.register(VirtualMachine)
class VirtualMachineAdmin(VisibleMixin, ReadOnlyMixin, admin.ModelAdmin):
    """See VMs; power actions go through the portal's operations."""

    list_display = ("name", "owner", "state", "host", "vcpus", "memory_mib", "disk_gib")
    list_filter = ("state", "host", "organisation")
    search_fields = ("name", "owner__username")


@admin.register(Operation)
class OperationAdmin(VisibleMixin, ReadOnlyMixin, admin.ModelAdmin):
    """See operations; retries and dismissals are on the portal's Operations page."""

    list_display = ("id", "kind", "vm", "host", "status", "attempts", "created_at")
    list_filter = ("status", "kind")

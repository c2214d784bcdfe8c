"""Django admin for requests, VMs and operations."""

from django.contrib import admin

from .models import ApprovalStep, Operation, VirtualMachine, VMRequest


class ApprovalStepInline(admin.TabularInline):
    """Show a request's decisions."""

    model = ApprovalStep
    extra = 0
    readonly_fields = ("actor", "stage", "decision", "reason", "created_at")
    can_delete = False


@admin.register(VMRequest)
class VMRequestAdmin(admin.ModelAdmin):
    """See requests; decisions are taken in the portal, where the chain is enforced."""

    list_display = ("name", "requester", "organisation", "stage", "created_at")
    list_filter = ("stage", "organisation")
    search_fields = ("name", "requester__username")
    inlines = [ApprovalStepInline]
    readonly_fields = ("stage",)


@admin.register(VirtualMachine)
class VirtualMachineAdmin(admin.ModelAdmin):
    """See VMs; power actions go through the portal's operations."""

    list_display = ("name", "owner", "state", "host", "vcpus", "memory_mib", "disk_gib")
    list_filter = ("state", "host", "organisation")
    search_fields = ("name", "owner__username")
    readonly_fields = ("uuid", "state", "state_checked_at", "host", "datastore")


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    """See operations."""

    list_display = ("id", "kind", "vm", "host", "status", "attempts", "created_at")
    list_filter = ("status", "kind")
    readonly_fields = [f.name for f in Operation._meta.fields]

"""Django admin for hosts, datastores and templates."""

from django.contrib import admin, messages

from .models import Datastore, Host, Template
from .services import host_refresh_request


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    """Manage hosts; refreshing reads their facts through a worker."""

    list_display = ("name", "uri", "status", "accel", "cpu_mode", "vcpus", "memory_mib",
                    "last_seen_at")
    list_filter = ("status", "accel")
    search_fields = ("name", "uri", "address")
    readonly_fields = ("vcpus", "memory_mib", "accel", "cpu_mode", "probe_report", "probed_at",
                       "last_seen_at", "last_error", "unknown_domains", "missing_domains",
                       "orphan_volumes", "reconciled_at", "health_checks", "health_checked_at",
                       "health_failures", "down_reason", "down_by_check")
    actions = ["refresh"]

    def save_model(self, request, obj, form, change) -> None:  # noqa: ANN001
        """Save the host and queue the reading of its facts (again, when the pins changed)."""
        super().save_model(request, obj, form, change)
        if not change or {"accel_pin", "cpu_mode_pin"} & set(form.changed_data):
            host_refresh_request(host=obj, requested_by=request.user)

    @admin.action(description="Refresh the selected hosts' facts")
    def refresh(self, request, queryset) -> None:  # noqa: ANN001
        """Queue a refresh of each selected host."""
        for host in queryset:
            host_refresh_request(host=host, requested_by=request.user)
        self.message_user(request, f"Refresh of {queryset.count()} host(s) queued.",
                          messages.SUCCESS)


@admin.register(Datastore)
class DatastoreAdmin(admin.ModelAdmin):
    """Manage datastores."""

    list_display = ("name", "path", "capacity_gib")
    filter_horizontal = ("hosts",)


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    """Manage templates and the sizes they allow."""

    list_display = ("name", "os_name", "datastore", "image", "is_active")
    list_filter = ("is_active", "datastore")

"""What the VMs placed on hosts and datastores use: the one sum placement and pages read."""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from .models import Datastore, Host


def _live_vms() -> QuerySet:
    # The VMs that hold room, through the relation's own queryset (`live()`): hosts sit below
    # the VMs application and import nothing of it.
    return Host._meta.get_field("vms").related_model.objects.live()


def hosts_with_usage(hosts: QuerySet[Host] | None = None) -> QuerySet[Host]:
    """Annotate hosts with `vm_count`, `used_vcpus` and `used_memory` of their live VMs."""
    hosts = Host.objects.all() if hosts is None else hosts
    per_host = _live_vms().filter(host=OuterRef("pk")).order_by().values("host")

    def total(expression: object) -> Coalesce:
        return Coalesce(Subquery(per_host.annotate(n=expression).values("n")), 0,
                        output_field=IntegerField())

    return hosts.annotate(vm_count=total(Count("pk")), used_vcpus=total(Sum("vcpus")),
                          used_memory=total(Sum("memory_mib")))


def host_usage(host: Host) -> tuple[int, int]:
    """Return the vCPUs and MiB of RAM given to the host's live VMs."""
    used = hosts_with_usage(Host.objects.filter(pk=host.pk)).values(
        "used_vcpus", "used_memory").get()
    return used["used_vcpus"], used["used_memory"]


def datastore_usage(datastore: Datastore) -> int:
    """Return the GiB the datastore's live VM disks and extra disks take."""
    vm_disks = datastore.vms.live().aggregate(s=Sum("disk_gib"))["s"] or 0
    extra = datastore.extra_disks.aggregate(s=Sum("size_gib"))["s"] or 0
    return vm_disks + extra


# How busy a host's CPUs were at the last measurement (percent), or None. The monitoring
# application, which sits above hosts, says where to read it (`host_load_source_set`).
_load_source: Callable[[Host], float | None] | None = None


def host_load_source_set(source: Callable[[Host], float | None]) -> None:
    """Read hosts' last measured CPU load through this function."""
    global _load_source  # noqa: PLW0603 - set once, from MonitoringConfig.ready()
    _load_source = source


def host_overview_rows(hosts: QuerySet[Host]) -> list[dict]:
    """Return each host's load, free capacity and VM count (`hosts_with_usage`), for the list."""
    rows = []
    for h in hosts:
        rows.append({
            "pk": h.pk, "name": h.name, "uri": h.uri, "status": h.status,
            "status_label": h.get_status_display(), "last_error": h.last_error,
            "accel": h.accel_label or "—", "vm_count": h.vm_count,
            "cpu_load": _load_source(h) if _load_source is not None else None,
            "vcpu_capacity": h.vcpu_capacity,
            "vcpus_free": h.vcpu_capacity - h.used_vcpus,
            "memory_capacity": h.memory_capacity_mib,
            "memory_free": h.memory_capacity_mib - h.used_memory,
            "last_seen": h.last_seen_at,
            "health": h.health_state,
        })
    return rows

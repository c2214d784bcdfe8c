"""Admin pages of hosts: capacity, use and what the last reconcile found."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django_tables2 import RequestConfig

from portal import permissions
from vms.models import VMState

from .tables import HostOverviewTable


def _with_usage(qs):  # noqa: ANN001, ANN202
    live = ~Q(vms__state=VMState.DELETED)
    return qs.annotate(
        vm_count=Count("vms", filter=live),
        used_vcpus=Sum("vms__vcpus", filter=live),
        used_memory=Sum("vms__memory_mib", filter=live),
    )


def host_overview_rows(hosts) -> list[dict]:  # noqa: ANN001
    """Return each host's load, free capacity and VM count, for the sortable overview."""
    from monitoring.collector import host_key, rrd_store

    store = rrd_store()
    rows = []
    for h in hosts:
        latest = store.latest("host", host_key(h))
        rows.append({
            "pk": h.pk, "name": h.name, "uri": h.uri, "status": h.status,
            "status_label": h.get_status_display(), "last_error": h.last_error,
            "accel": h.accel.upper() or "—", "vm_count": h.vm_count,
            "cpu_load": latest.get("cpu"),
            "vcpu_capacity": h.vcpu_capacity,
            "vcpus_free": h.vcpu_capacity - (h.used_vcpus or 0),
            "memory_capacity": h.memory_capacity_mib,
            "memory_free": h.memory_capacity_mib - (h.used_memory or 0),
            "last_seen": h.last_seen_at,
        })
    return rows


@login_required
@require_GET
def host_list(request: HttpRequest) -> HttpResponse:
    """List hosts with load, free capacity and VMs, sortable (admins)."""
    permissions.require(permissions.is_admin(request.user))
    hosts = _with_usage(permissions.hosts_visible_to(request.user))
    table = HostOverviewTable(host_overview_rows(hosts))
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    return render(request, "hosts/host_list.html", {"hosts": hosts, "table": table})


@login_required
@require_GET
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one host with its VMs, datastores and operations (admins)."""
    host = get_object_or_404(_with_usage(permissions.hosts_visible_to(request.user)), pk=pk)
    vms = (host.vms.exclude(state=VMState.DELETED).select_related("owner")
           .prefetch_related("private_ips"))
    return render(request, "hosts/host_detail.html", {
        "host": host, "vms": vms, "datastores": host.datastores.all(),
        "operations": host.operations.select_related("requested_by")[:10],
    })

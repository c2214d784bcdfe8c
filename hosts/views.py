"""Admin pages of hosts: capacity, use and what the last reconcile found."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from portal import permissions
from vms.models import VMState

from .models import AccelPin
from .services import host_pins_set, host_refresh_request
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
        "accel_pins": AccelPin.choices,
    })


@login_required
@require_POST
def host_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a refresh of the host, saving its pins first when the form sends them (admins)."""
    permissions.require(permissions.is_admin(request.user))
    host = get_object_or_404(permissions.hosts_visible_to(request.user), pk=pk)
    if "pins" in request.POST:
        try:
            host_pins_set(host=host, accel_pin=request.POST.get("accel_pin", ""),
                          cpu_mode_pin=request.POST.get("cpu_mode_pin", ""),
                          requested_by=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("hosts:host_detail", pk=host.pk)
        messages.success(request, f"Pins of {host.name} saved; it is being probed again.")
    else:
        host_refresh_request(host=host, requested_by=request.user)
        messages.success(request, f"Refresh of {host.name} queued.")
    return redirect("hosts:host_detail", pk=host.pk)

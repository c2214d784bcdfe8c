"""Admin pages of hosts: capacity, use and what the last reconcile found."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from portal import permissions
from vms.models import VMState


def _with_usage(qs):  # noqa: ANN001, ANN202
    live = ~Q(vms__state=VMState.DELETED)
    return qs.annotate(
        vm_count=Count("vms", filter=live),
        used_vcpus=Sum("vms__vcpus", filter=live),
        used_memory=Sum("vms__memory_mib", filter=live),
    )


@login_required
@require_GET
def host_list(request: HttpRequest) -> HttpResponse:
    """List hosts with capacity and use (admins)."""
    permissions.require(permissions.is_admin(request.user))
    hosts = _with_usage(permissions.hosts_visible_to(request.user))
    return render(request, "hosts/host_list.html", {"hosts": hosts})


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

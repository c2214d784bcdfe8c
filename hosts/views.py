"""Admin pages of hosts: capacity, use and what the last reconcile found."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from core.views import permitted_or_404, require

from .filters import HostFilter
from .models import AccelPin, Host
from .selectors import host_overview_rows, hosts_with_usage
from .services import host_pins_set, host_refresh_request
from .tables import HostOverviewTable


@login_required
@require_GET
def host_list(request: HttpRequest) -> HttpResponse:
    """List hosts with load, free capacity and VMs, sortable (admins)."""
    require(request.user.has_perm("hosts.view_host"))
    filters = HostFilter(request.GET, queryset=hosts_with_usage(
        Host.objects.visible_to(request.user)))
    hosts = filters.qs
    table = HostOverviewTable(host_overview_rows(hosts))
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    return render(request, "hosts/host_list.html", {"hosts": hosts, "table": table,
                                                    "filters": filters.form})


@login_required
@require_GET
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show one host with its VMs, datastores and operations (admins)."""
    host = get_object_or_404(hosts_with_usage(Host.objects.visible_to(request.user)), pk=pk)
    vms = host.vms.live().select_related("owner").prefetch_related("private_ips")
    return render(request, "hosts/host_detail.html", {
        "host": host, "vms": vms, "datastores": host.datastores.all(),
        "operations": host.operations.select_related("requested_by")[:10],
        "accel_pins": AccelPin.choices,
    })


@login_required
@require_POST
def host_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a refresh of the host, saving its pins first when the form sends them (admins)."""
    host = permitted_or_404(Host.objects, request.user, "hosts.manage_host", pk=pk)
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

"""Admin pages of hosts: capacity, use and what the last reconcile found."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from core.errors import PortalError
from core.views import Confirmation, confirmation_page, confirmed, permitted_or_404, require

from . import services
from .filters import HostFilter
from .models import AccelPin, Host
from .power import POWER_OFF_STATES, host_power_request
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
    evacuation = services.host_evacuation_last(host)
    return render(request, "hosts/host_detail.html", {
        "host": host, "vms": vms, "datastores": host.datastores.all(),
        "operations": host.operations.select_related("requested_by")[:10],
        "accel_pins": AccelPin.choices, "power_off_states": POWER_OFF_STATES,
        "evacuation": evacuation, "evacuation_rows": services.host_evacuation_rows(evacuation),
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


def _managed(request: HttpRequest, pk: int) -> Host:
    return permitted_or_404(Host.objects, request.user, "hosts.manage_host", pk=pk)


@login_required
@require_POST
def host_maintenance(request: HttpRequest, pk: int) -> HttpResponse:
    """Put the host into maintenance: no new VM is placed there (admins)."""
    host = _managed(request, pk)
    try:
        staying = services.host_maintenance_enter(host=host)
    except PortalError as exc:
        messages.error(request, str(exc))
        return redirect("hosts:host_detail", pk=host.pk)
    text = f"{host.name} is in maintenance: no new VM is placed there."
    if staying:
        return _evacuate(request, host, lead=text + " ")
    messages.success(request, text)
    return redirect("hosts:host_detail", pk=host.pk)


def _evacuate(request: HttpRequest, host: Host, *, lead: str = "") -> HttpResponse:
    """Ask for the host's evacuation and say how it went, after `lead`."""
    try:
        op = services.host_evacuate_request(host=host, actor=request.user)
    except PortalError as exc:
        messages.warning(request, f"{lead}Its VMs stay for now: {exc}")
    else:
        messages.success(request, lead + (
            f"The VMs left on {host.name} are being moved to other hosts." if op is not None
            else f"No VM is left on {host.name}; nothing to move."))
    return redirect("hosts:host_detail", pk=host.pk)


@login_required
@require_POST
def host_evacuate(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask again for the VMs left on a host in maintenance to move elsewhere (admins)."""
    host = _managed(request, pk)
    return _evacuate(request, host)


def _host_change(request: HttpRequest, pk: int, change: Callable[..., object],
                 done: str) -> HttpResponse:
    host = _managed(request, pk)
    try:
        change(host=host)
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done.format(host=host.name))
    return redirect("hosts:host_detail", pk=host.pk)


@login_required
@require_POST
def host_maintenance_leave(request: HttpRequest, pk: int) -> HttpResponse:
    """Take the host out of maintenance: it takes new VMs again (admins)."""
    return _host_change(request, pk, services.host_maintenance_leave,
                        "{host} left maintenance and takes new VMs again.")


@login_required
@require_POST
def host_mark_up(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark a down host up again after a health check passed (admins)."""
    return _host_change(request, pk, services.host_mark_up,
                        "{host} is up and takes new VMs again.")


def _power_off_question(request: HttpRequest, host: Host) -> HttpResponse:
    """Ask before powering off; nothing changes until the person confirms."""
    return confirmation_page(request, Confirmation(
        title=f"Power off {host.name}?",
        consequences=(
            f"{host.name} is switched off through {host.get_power_method_display()}: "
            "whatever runs on it outside the portal stops, and it stays off until powered "
            "on again.",
            "The portal refuses while any of its VMs is running.",
        ),
        button=f"Power off {host.name}",
        back_url=reverse("hosts:host_detail", args=[host.pk])))


def _power(request: HttpRequest, pk: int, *, on: bool) -> HttpResponse:
    host = _managed(request, pk)
    if not on and not confirmed(request):
        return _power_off_question(request, host)
    try:
        host_power_request(host=host, on=on, actor=request.user)
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Power {'on' if on else 'off'} of {host.name} queued; "
                                  "the host's operations below say how it went.")
    return redirect("hosts:host_detail", pk=host.pk)


@login_required
@require_POST
def host_power_on(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue powering the host on through its configured method (admins)."""
    return _power(request, pk, on=True)


@login_required
@require_POST
def host_power_off(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue powering the host off, refused while VMs run there (admins)."""
    return _power(request, pk, on=False)

"""Admin pages of the address pools: use, filters and ranges."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from core.views import form_errors, require

from .allocation import SSHPortSettingsError, ssh_port_config
from .filters import AddressFilter
from .forms import PrivateRangeForm, RangeForm
from .models import VLAN, PublicIP, SecurityDomain, SSHPort
from .ranges import private_range_add, public_range_add
from .services import nat_resync_request
from .tables import PrivateIPTable, PublicIPTable

SSH_PORTS_LISTED = 50


def _admin(request: HttpRequest) -> None:
    require(request.user.has_perm("networking.manage_pools"))


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Show VLANs, security domains and the public pool with their use."""
    _admin(request)
    vlans = VLAN.objects.annotate(
        total=Count("addresses"),
        taken=Count("addresses", filter=Q(addresses__vm__isnull=False)
                    | Q(addresses__host__isnull=False)),
    )
    public = PublicIP.objects.aggregate(total=Count("id"), taken=Count("vm"))
    try:
        ssh, ssh_error = ssh_port_config(), ""
    except SSHPortSettingsError as exc:
        ssh, ssh_error = None, str(exc)
    held = SSHPort.objects.filter(vm__isnull=False).select_related("vm")
    held_count = held.count()
    return render(request, "networking/overview.html", {
        "ssh": ssh, "ssh_error": ssh_error, "ssh_held": held_count,
        "ssh_ports": held[:SSH_PORTS_LISTED], "ssh_more": max(0, held_count - SSH_PORTS_LISTED),
        "vlans": vlans,
        "domains": SecurityDomain.objects.select_related("vlan").prefetch_related(
            "organisations"),
        "public": public,
        "dhcp_backend": settings.PORTAL_DHCP["BACKEND"],
        "nat_backend": settings.PORTAL_NAT["BACKEND"],
    })


@login_required
def vlan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """List a VLAN's addresses with filters, and take a range to add."""
    _admin(request)
    vlan = get_object_or_404(VLAN, pk=pk)
    range_form = PrivateRangeForm(request.POST or None, vlan=vlan)
    if request.method == "POST" and range_form.is_valid():
        try:
            added = private_range_add(vlan=vlan, first=range_form.cleaned_data["first"],
                                      last=range_form.cleaned_data["last"],
                                      macs=range_form.mac_list())
        except ValidationError as exc:
            form_errors(range_form, exc)
        else:
            messages.success(request, f"Added {len(added)} address(es) to {vlan.name}: "
                             f"{added[0].address} to {added[-1].address}.")
            return redirect("networking:vlan_detail", pk=pk)
    filters = AddressFilter(request.GET, queryset=vlan.addresses.select_related("vm", "host"))
    table = PrivateIPTable(filters.qs)
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    return render(request, "networking/vlan_detail.html", {
        "vlan": vlan, "table": table, "filters": filters.form, "range_form": range_form,
        "total": vlan.addresses.count(),
        "free": vlan.addresses.filter(vm__isnull=True, host__isnull=True).count(),
    })


@login_required
def public_pool(request: HttpRequest) -> HttpResponse:
    """List the public addresses with filters, and take a range to add."""
    _admin(request)
    range_form = RangeForm(request.POST or None)
    if request.method == "POST" and range_form.is_valid():
        try:
            added = public_range_add(first=range_form.cleaned_data["first"],
                                     last=range_form.cleaned_data["last"])
        except ValidationError as exc:
            form_errors(range_form, exc)
        else:
            messages.success(request, f"Added {len(added)} public address(es).")
            return redirect("networking:public_pool")
    filters = AddressFilter(request.GET, queryset=PublicIP.objects.select_related("vm", "mapping"))
    table = PublicIPTable(filters.qs)
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    return render(request, "networking/public_pool.html", {
        "table": table, "filters": filters.form, "range_form": range_form,
        "total": PublicIP.objects.count(), "free": PublicIP.objects.filter(vm__isnull=True).count(),
        "nat_backend": settings.PORTAL_NAT["BACKEND"],
    })


@login_required
@require_POST
def nat_resync(request: HttpRequest) -> HttpResponse:
    """Queue the clearing and re-applying of every NAT mapping."""
    _admin(request)
    nat_resync_request(actor=request.user)
    messages.success(request, "Re-applying every NAT mapping from the database; see Operations.")
    return redirect("networking:public_pool")

"""The cloud page (admins): what a whole-cloud shutdown would do, its progress, the bootup."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import PortalError
from core.views import Confirmation, confirmation_page, confirmed, require
from hosts.models import Host
from operations.models import Operation

from .services.cloud_power import (
    ACTED_HOST_STATES,
    CLOUD_KINDS,
    MANAGE,
    cloud_bootup_request,
    cloud_hosts_now,
    cloud_shutdown_open,
    cloud_shutdown_request,
)


@login_required
def cloud_overview(request: HttpRequest) -> HttpResponse:
    """Show what a shutdown would do, the one under way or done, and the bootup (admins)."""
    require(request.user.has_perm(MANAGE))
    record = cloud_shutdown_open()
    hosts = cloud_hosts_now()
    operations = Operation.objects.filter(kind__in=CLOUD_KINDS).select_related(
        "requested_by")[:6]
    return render(request, "vms/cloud.html", {
        "record": record, "hosts": hosts, "running": sum(h.running for h in hosts),
        "skipped_hosts": Host.objects.exclude(status__in=ACTED_HOST_STATES).order_by("name"),
        "host_rows": record.hosts.select_related("host") if record else [],
        "vm_rows": record.vms.select_related("vm", "host") if record else [],
        "operations": operations,
        "under_way": next((op for op in operations if op.is_active), None),
    })


def _asked(request: HttpRequest, ask, done: str) -> HttpResponse:  # noqa: ANN001
    try:
        ask(actor=request.user)
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("vms:cloud")


@login_required
@require_POST
def cloud_shutdown(request: HttpRequest) -> HttpResponse:
    """Ask, then queue the whole-cloud shutdown (admins)."""
    require(request.user.has_perm(MANAGE))
    if not confirmed(request):
        hosts = cloud_hosts_now()
        return confirmation_page(request, Confirmation(
            title="Shut the whole cloud down?",
            consequences=(
                f"Every running or suspended VM ({sum(h.running for h in hosts)} now, on "
                f"{len(hosts)} host(s)) is saved with its memory and forced off; then each "
                "host is powered off through its power method (a host without one is left "
                "on).",
                "Until the cloud is booted up again, no VM can be started, installed or "
                "changed; its owners read that the cloud is shut down for maintenance.",
                "Booting up resumes exactly these VMs from where they were.",
            ),
            button="Shut the cloud down",
            back_url=reverse("vms:cloud")))
    return _asked(request, cloud_shutdown_request,
                  "The cloud's shutdown is queued; this page shows how far it got.")


@login_required
@require_POST
def cloud_bootup(request: HttpRequest) -> HttpResponse:
    """Queue the bootup of the shut-down cloud (admins)."""
    require(request.user.has_perm(MANAGE))
    return _asked(request, cloud_bootup_request,
                  "The cloud's bootup is queued; this page shows how far it got.")

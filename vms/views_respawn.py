"""The host page's respawn: a dead host's VMs defined and started on other hosts (admins)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import PortalError
from core.views import Confirmation, checked, confirmation_page, confirmed, permitted_or_404
from hosts.models import Host
from hosts.power import host_fence_means

from .models import VirtualMachine
from .services.respawn import MANAGE_HOST, host_respawn_refusal, host_respawn_request


def respawn_confirmation(host: Host) -> Confirmation:
    """Return the question asked before respawning the host's VMs elsewhere."""
    means = host_fence_means(host)
    names = list(VirtualMachine.objects.live().filter(host=host).values_list("name", flat=True))
    fence = (f"{host.name} is powered off first through {means}, whatever VMs are recorded "
             "there; if that fails, nothing is respawned." if means else
             f"The portal cannot power {host.name} off (no IPMI or SSH power method). A VM "
             "that still runs there and is started elsewhere too would corrupt its disk: make "
             f"sure {host.name} is off before you confirm.")
    return Confirmation(
        title=f"Respawn the VMs of {host.name} elsewhere?",
        consequences=(
            fence,
            f"Then each of its {len(names)} VM(s) ({', '.join(names[:10])}"
            f"{', …' if len(names) > 10 else ''}) whose disk is on a shared datastore is "
            "defined on another host with room, from the same disk, and started if it ran "
            "before. The others stay, marked as needing attention.",
            "What ran in their memory is lost: they boot afresh. This cannot be undone.",
        ),
        button="Fence and respawn", back_url=reverse("hosts:host_detail", args=[host.pk]),
        checkbox="" if means else f"I have made sure {host.name} is powered off.")


@login_required
@require_POST
def host_respawn(request: HttpRequest, pk: int) -> HttpResponse:
    """Fence a down host and respawn its VMs on other hosts, after a confirmation (admins)."""
    host = permitted_or_404(Host.objects, request.user, MANAGE_HOST, pk=pk)
    refusal = host_respawn_refusal(host, off_confirmed=True)
    if refusal is None and not confirmed(request):
        return confirmation_page(request, respawn_confirmation(host))
    try:
        host_respawn_request(host=host, actor=request.user, off_confirmed=checked(request))
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Respawn of the VMs of {host.name} queued: it is fenced "
                                  "first; see Host operations.")
    return redirect("hosts:host_detail", pk=host.pk)

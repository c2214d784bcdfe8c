"""The dashboard each role lands on."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from hosts.models import Host
from hosts.selectors import hosts_with_usage
from operations.models import Operation
from vms.models import VirtualMachine, VMRequest, VMState


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show the user's VMs, requests, pending approvals and, for admins, the pool's health."""
    user = request.user
    vms = VirtualMachine.objects.visible_to(user).live()
    states = dict(vms.values_list("state").annotate(n=Count("id")).order_by())
    context = {
        "my_vms": vms.filter(owner=user).select_related("host").prefetch_related("private_ips")[:8],
        "vm_total": sum(states.values()),
        "vm_running": states.get(VMState.RUNNING, 0),
        "my_requests": VMRequest.objects.visible_to(user).filter(requester=user)
        .select_related("template")[:5],
        "awaiting_count": VMRequest.objects.awaiting(user).count(),
        "recent_ops": Operation.objects.visible_to(user).select_related("vm", "host")[:6],
    }
    if user.has_perm("hosts.view_host"):
        context["hosts"] = hosts_with_usage(Host.objects.visible_to(user))
        # Routine failures (a guest that ignored a shut down) are their owners' to act on.
        context["failed_ops"] = Operation.objects.visible_to(user).needing_attention().count()
    return render(request, "portal/dashboard.html", context)

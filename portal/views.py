"""The dashboard each role lands on, and the pages of errors."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import requires_csrf_token
from django.views.decorators.http import require_GET

from hosts.models import Host
from hosts.selectors import hosts_with_usage
from operations.models import Operation
from vms.models import VirtualMachine, VMRequest, VMState
from vms.services.cloud_power import cloud_shut_words, cloud_shutdown_open


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
    shut = cloud_shutdown_open()
    if shut is not None:
        context["cloud_shut"] = cloud_shut_words(shut)
    if user.has_perm("hosts.view_host"):
        context["hosts"] = hosts_with_usage(Host.objects.visible_to(user))
        # Routine failures (a guest that ignored a shut down) are their owners' to act on.
        context["failed_ops"] = Operation.objects.visible_to(user).needing_attention().count()
    return render(request, "portal/dashboard.html", context)


def _back_url(request: HttpRequest) -> str:
    """Return the page the user came from, if it is one of the portal's and not this one."""
    referer = request.META.get("HTTP_REFERER", "")
    try:
        host = request.get_host()
    except Exception:  # noqa: BLE001 - a bad Host header: offer no way back but the dashboard
        return ""
    if referer and referer != request.build_absolute_uri() and url_has_allowed_host_and_scheme(
            referer, allowed_hosts={host}, require_https=request.is_secure()):
        return referer
    return ""


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer 404 in the portal's look, with a way back."""
    return render(request, "404.html", {"back_url": _back_url(request)}, status=404)


@requires_csrf_token
def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Answer 403 in the portal's look, with a way back."""
    return render(request, "403.html", {"back_url": _back_url(request)}, status=403)


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    """Answer 500 from a template that needs no request: the database may be what failed."""
    return HttpResponseServerError(loader.get_template("500.html").render())

"""Console pages: noVNC for the graphical console, xterm.js for the serial console."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.errors import PortalError
from core.views import permitted_or_404
from vms.models import VirtualMachine
from vms.selectors import vm_ssh_access

from .conf import public_url, websocket_origin
from .models import ConsoleKind
from .services import CONSOLE_STATES, console_token_issue

TEMPLATES = {ConsoleKind.VNC: "console/vnc.html", ConsoleKind.SERIAL: "console/serial.html"}


def _operable_vm(request: HttpRequest, pk: int) -> VirtualMachine:
    """Return the VM if the user may operate it; 404 for anything else."""
    return permitted_or_404(VirtualMachine.objects.select_related("owner", "host"),
                            request.user, "vms.operate_vm", pk=pk)


@login_required
@require_GET
def console_page(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """Show the graphical or serial console of a VM; its script asks for a token by POST."""
    vm = _operable_vm(request, pk)
    response = render(request, TEMPLATES[ConsoleKind(kind)], {
        "vm": vm,
        "kind": kind,
        "can_open": vm.state in CONSOLE_STATES and vm.host_id is not None,
        "token_url": reverse(f"console:{kind}_token", args=[vm.pk]),
        "ssh_line": vm_ssh_access(vm).best,
    })
    # The page's script opens a websocket to the proxy, on its own origin (Content-Security-
    # Policy's connect-src); django-csp adds the nonce the serial page used, if any.
    response._csp_update = {"connect-src": [websocket_origin(request)]}
    return response


@login_required
@require_POST
def console_token(request: HttpRequest, pk: int, kind: str) -> JsonResponse:
    """Issue a single-use token and answer the websocket URL that carries it."""
    vm = _operable_vm(request, pk)
    try:
        token = console_token_issue(user=request.user, vm=vm, kind=ConsoleKind(kind))
    except PortalError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    response = JsonResponse({"url": f"{public_url(request)}/{kind}?token={token}"})
    response["Cache-Control"] = "no-store"
    return response

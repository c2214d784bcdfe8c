"""Admin pages acting on what the reconciler found on a host (the host page's findings card)."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.errors import PortalError
from core.views import Confirmation, confirmation_page, confirmed, permitted_or_404, require
from hosts.models import Host, Template
from operations.models import Operation

from .models import VirtualMachine
from .services.adoption import orphan_domain_adopt_request
from .services.missing import vm_lost_request, vm_recreate_request
from .services.orphans import (
    MANAGE_HOST,
    orphan_domain_delete_request,
    orphan_volume_delete_request,
)


def _host(request: HttpRequest, pk: int) -> Host:
    return permitted_or_404(Host.objects, request.user, MANAGE_HOST, pk=pk)


def _asked(request: HttpRequest, host_pk: int, ask: Callable[[], Operation], done: str
           ) -> HttpResponse:
    """Ask for the operation; say what happens next or why it was refused; back to the host."""
    try:
        ask()
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("hosts:host_detail", pk=host_pk)


class AdoptForm(forms.Form):
    """Which orphan domain becomes whose VM, counted as which template."""

    domain = forms.ChoiceField(label="Domain")
    owner = forms.ModelChoiceField(queryset=None, label="Owner",
                                   help_text="The VM appears in this person's list; its "
                                             "organisation is the owner's.")
    template = forms.ModelChoiceField(queryset=Template.objects.all(), label="Template",
                                      help_text="What the VM counts as (its bounds, its OS).")

    def __init__(self, *args: object, host: Host, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["domain"].choices = [(d, d) for d in host.unknown_domains]
        self.fields["owner"].queryset = get_user_model().objects.filter(
            is_active=True, organisation__isnull=False).order_by("username")


@login_required
def host_domain_adopt(request: HttpRequest, pk: int) -> HttpResponse:
    """Show and take the form adopting an orphan domain of the host as a VM (admins)."""
    host = _host(request, pk)
    form = AdoptForm(request.POST or None, host=host,
                     initial={"domain": request.GET.get("domain", "")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        return _asked(request, host.pk, lambda: orphan_domain_adopt_request(
            host=host, domain=data["domain"], owner=data["owner"], template=data["template"],
            actor=request.user),
            f"Adoption of {data['domain']} queued; it appears in {data['owner']}'s list "
            "once done.")
    return render(request, "vms/host_domain_adopt.html", {"host": host, "form": form})


@login_required
@require_POST
def host_domain_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete an orphan domain of the host, after a confirmation (admins)."""
    host = _host(request, pk)
    name = request.POST.get("domain", "")
    if not confirmed(request):
        return confirmation_page(request, Confirmation(
            title=f"Delete domain {name} on {host.name}?",
            consequences=(
                f"The domain {name} is forced off and undefined on {host.name}; whatever ran "
                "in it stops at once. This cannot be undone.",
                "Its disks are deleted too, except those a VM, disk, seed or template of the "
                "portal or another domain uses, or that lie outside the portal's datastores: "
                "the operation's message lists which were kept and why.",
            ),
            button="Delete domain", back_url=reverse("hosts:host_detail", args=[host.pk])),
            keep={"domain": name})
    return _asked(request, host.pk, lambda: orphan_domain_delete_request(
        host=host, domain=name, actor=request.user), f"Deletion of domain {name} queued.")


@login_required
@require_POST
def host_volume_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete an orphan volume of the host's datastores, after a confirmation (admins)."""
    host = _host(request, pk)
    path = request.POST.get("volume", "")
    if not confirmed(request):
        return confirmation_page(request, Confirmation(
            title=f"Delete volume {path}?",
            consequences=(
                f"The file {path} is erased from its datastore. This cannot be undone.",
                "It is kept if, when the worker looks again, a VM, disk, seed, template or "
                "domain uses it.",
            ),
            button="Delete volume", back_url=reverse("hosts:host_detail", args=[host.pk])),
            keep={"volume": path})
    return _asked(request, host.pk, lambda: orphan_volume_delete_request(
        host=host, path=path, actor=request.user), f"Deletion of {path} queued.")


def _missing_vm(request: HttpRequest, pk: int) -> VirtualMachine:
    vm = permitted_or_404(VirtualMachine.objects.select_related("host", "owner"), request.user,
                          "vms.apply_change", pk=pk)
    require(vm.host_id is not None)  # only a VM placed on a host can have gone missing
    return vm


@login_required
@require_POST
def vm_mark_lost(request: HttpRequest, pk: int) -> HttpResponse:
    """Mark a VM whose domain is missing as lost, after a confirmation (admins)."""
    vm = _missing_vm(request, pk)
    back = reverse("hosts:host_detail", args=[vm.host_id])
    if not confirmed(request):
        return confirmation_page(request, Confirmation(
            title=f"Mark {vm.name} as lost?",
            consequences=(
                f"{vm.name} is recorded as deleted: it leaves {vm.owner}'s list, and its IP "
                "address, MAC, VNC port and any public IP or SSH port go back to the pools.",
                f"{vm.owner} is told by e-mail. If its disk is still on the datastore, it is "
                "reported as an orphan volume afterwards. This cannot be undone.",
            ),
            button="Mark as lost", back_url=back))
    return _asked(request, vm.host_id, lambda: vm_lost_request(vm=vm, actor=request.user),
                  f"{vm.name} is being marked lost.")


@login_required
@require_POST
def vm_recreate(request: HttpRequest, pk: int) -> HttpResponse:
    """Define a VM whose domain is missing again from its disk (admins)."""
    vm = _missing_vm(request, pk)
    start = request.POST.get("start") == "1"
    return _asked(request, vm.host_id, lambda: vm_recreate_request(
        vm=vm, actor=request.user, start=start), f"{vm.name} is being recreated from its disk.")

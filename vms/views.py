"""Views of requests, approvals, VMs and operations: parse, check, call a service, redirect."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from core.accounts.predicates import is_portal_admin
from core.errors import PortalError
from core.views import confirmation_page, confirmed, form_errors, require
from operations.models import Operation, OperationKind, OperationStatus
from operations.requests import operation_dismiss, operation_retry

from .confirmations import (
    disk_delete_confirmation,
    request_cancel_confirmation,
    snapshot_confirmation,
    vm_action_confirmation,
)
from .filters import OperationFilter, VirtualMachineFilter, VMRequestFilter
from .forms import (
    DecisionForm,
    ScheduleForm,
    SnapshotForm,
    TemplateSaveForm,
    VMChangeForm,
    VMRequestForm,
    text_refusals,
)
from .models import RequestKind, RequestStage, Snapshot, VirtualMachine, VMRequest
from .rules import is_requester
from .selectors import vm_page
from .services.changes import disk_action_request, template_save_request
from .services.credentials import vm_password_reveal
from .services.lifecycle import vm_action_request
from .services.migration import (
    MIGRATE,
    migration_card,
    migration_destinations,
    vm_migrate_cancel,
    vm_migrate_request,
)
from .services.snapshots import (
    snapshot_delete,
    snapshot_revert,
    snapshot_schedule_set,
    snapshot_take,
)
from .services.workflow import (
    vm_change_request_create,
    vm_request_approve,
    vm_request_cancel,
    vm_request_create,
    vm_request_reject,
)
from .tables import OperationTable, VirtualMachineTable, VMRequestTable

PER_PAGE = 25


def _table(request: HttpRequest, table: object) -> object:
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return table


@login_required
@require_GET
def request_list(request: HttpRequest) -> HttpResponse:
    """List the requests the user made or may see."""
    filters = VMRequestFilter(request.GET, request=request, queryset=VMRequest.objects
                              .visible_to(request.user).select_related("requester", "template"))
    table = _table(request, VMRequestTable(filters.qs))
    return render(request, "vms/request_list.html", {"table": table,
                                                     "mine": not filters.widened()})


@login_required
def request_create(request: HttpRequest) -> HttpResponse:
    """Show and take the form asking for a new VM."""
    form = VMRequestForm(request.POST or None, requester=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            vm_request = vm_request_create(
                requester=request.user, name=data["name"], template=data["template"],
                vcpus=data["vcpus"], memory_mib=data["memory_mib"], disk_gib=data["disk_gib"],
                purpose=data["purpose"], faculty=data.get("faculty"),
                security_domain=data["security_domain"], public_ip=data["public_ip"],
                ssh_keys=list(data["ssh_keys"]), generate_password=data["generate_password"],
            )
        except ValidationError as exc:
            form_errors(form, exc)
        else:
            waits = vm_request.get_stage_display().lower().replace("awaiting", "awaits")
            messages.success(request, f"Request {vm_request.name} submitted; it now {waits}.")
            return redirect("vms:request_detail", pk=vm_request.pk)
    return render(request, "vms/request_form.html", {"form": form})


@login_required
@require_GET
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a request with its approval history and the actions open to the user."""
    vm_request = get_object_or_404(
        VMRequest.objects.visible_to(request.user).select_related(
            "requester", "faculty", "template", "organisation"), pk=pk)
    steps = vm_request.steps.select_related("actor")
    context = {
        "vm_request": vm_request,
        "steps": steps,
        "own_waits_for_admin": (vm_request.is_pending and is_portal_admin.test(request.user)
                                and is_requester.test(request.user, vm_request)),
        "decision_form": DecisionForm(initial={"seen_stage": vm_request.stage}),
        "vm": getattr(vm_request, "vm", None),
    }
    return render(request, "vms/request_detail.html", context)


@login_required
@require_POST
def request_decide(request: HttpRequest, pk: int, decision: str) -> HttpResponse:
    """Approve or reject a request at its current stage."""
    vm_request = get_object_or_404(VMRequest.objects.visible_to(request.user), pk=pk)
    # Stale and own requests reach the service, which says why nothing was changed.
    require(request.user.has_perm("vms.decide_request", vm_request)
             or not vm_request.is_pending or is_requester.test(request.user, vm_request))
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, text_refusals(form)
                       or "The decision form was incomplete; nothing was changed.")
        return redirect("vms:request_detail", pk=pk)
    reason, seen = form.cleaned_data["reason"], form.cleaned_data["seen_stage"]
    try:
        if decision == "approve":
            done = vm_request_approve(request=vm_request, actor=request.user, reason=reason,
                                      seen_stage=seen)
            if done.stage != RequestStage.APPROVED:
                then = done.get_stage_display().lower().replace("awaiting", "it now awaits")
                messages.success(request, f"Approved {done.name}; {then}.")
            else:
                # The final approval made or changes a VM: link to it, to follow the work.
                vm_pk = done.target_id if done.is_change else done.vm.pk
                then = ("the change is under way" if done.is_change
                        else "its install is queued")
                messages.success(request, format_html(
                    'Approved {}; {}. <a href="{}" class="alert-link">Open {}</a>',
                    done.name, then, reverse("vms:vm_detail", args=[vm_pk]), done.name))
        else:
            done = vm_request_reject(request=vm_request, actor=request.user, reason=reason,
                                     seen_stage=seen)
            messages.success(request, f"Rejected {done.name}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PortalError as exc:
        messages.error(request, str(exc))
    next_url = request.POST.get("next")
    if next_url == "approvals":
        return redirect("vms:approvals")
    return redirect("vms:request_detail", pk=pk)


@login_required
@require_POST
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Withdraw one's own pending request."""
    vm_request = get_object_or_404(VMRequest.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.cancel_request", vm_request) or not vm_request.is_pending)
    if not confirmed(request) and request.user.has_perm("vms.cancel_request", vm_request):
        return confirmation_page(request, request_cancel_confirmation(vm_request))
    try:
        vm_request_cancel(request=vm_request, actor=request.user)
        messages.success(request, f"Request {vm_request.name} cancelled.")
    except PortalError as exc:
        messages.error(request, str(exc))
    return redirect("vms:request_detail", pk=pk)


@login_required
@require_GET
def approvals(request: HttpRequest) -> HttpResponse:
    """List the requests waiting for the user's decision."""
    qs = VMRequest.objects.awaiting(request.user).select_related(
        "requester", "template", "faculty").order_by("created_at")
    return render(request, "vms/approvals.html", {"pending": qs[:PER_PAGE],
                                                  "count": qs.count()})


@login_required
@require_GET
def vm_list(request: HttpRequest) -> HttpResponse:
    """List the VMs the user may see."""
    filters = VirtualMachineFilter(request.GET, request=request, queryset=VirtualMachine.objects
                                   .visible_to(request.user).select_related("owner", "host")
                                   .prefetch_related("private_ips"))
    table = _table(request, VirtualMachineTable(filters.qs))
    return render(request, "vms/vm_list.html", {"table": table,
                                                "show_deleted": filters.widened()})


def _vm_context(request: HttpRequest, pk: int) -> dict:
    vm = get_object_or_404(
        VirtualMachine.objects.visible_to(request.user).select_related(
            "owner", "host", "datastore", "template", "organisation", "request",
            "security_domain").prefetch_related("private_ips__vlan"), pk=pk)
    # The operation just asked for from this page (`?op=`): queued, under way, then its outcome.
    asked = request.GET.get("op", "")
    notice_op = (vm.operations.select_related("superseded_by").filter(pk=int(asked)).first()
                 if asked.isdigit() else None)
    return {**vm_page(vm=vm, user=request.user), "notice_op": notice_op,
            "schedule_choices": ScheduleForm.base_fields["frequencies"].choices,
            "migration": migration_card(vm=vm, user=request.user)}


@login_required
@require_GET
def vm_detail(request: HttpRequest, pk: int, template: str = "vms/vm_detail.html") -> HttpResponse:
    """Show a VM with its state, placement, address and operations.

    The URLs the page polls render a part of it the same way: its live part (state, actions,
    operations) and its "How to log in" panel, which it polls until the install has ended.
    """
    return render(request, template, _vm_context(request, pk))


@login_required
@require_POST
def vm_password(request: HttpRequest, pk: int) -> HttpResponse:
    """Show the VM's generated password to its owner, once; only its hash stays."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.view_vm_password", vm))
    try:
        password = vm_password_reveal(vm=vm, actor=request.user)
    except PortalError as exc:
        messages.error(request, str(exc))
        return redirect("vms:vm_detail", pk=pk)
    context = _vm_context(request, pk)
    context["revealed_password"] = password
    response = render(request, "vms/vm_detail.html", context)
    response["Cache-Control"] = "no-store"  # never from a cache or the back button
    return response


@login_required
@require_POST
def vm_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Queue a power action or deletion on a VM."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    kind = OperationKind(action)  # the route takes only the owner's actions
    require(request.user.has_perm("vms.operate_vm", vm))
    if not confirmed(request) and (question := vm_action_confirmation(vm, kind)):
        return confirmation_page(request, question)
    return _done(request, pk, lambda: vm_action_request(vm=vm, kind=kind, actor=request.user),
                 "")


@login_required
def vm_change(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """Show and take the form asking for a change to a VM."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user).select_related(
        "request", "owner", "security_domain"), pk=pk)
    require(request.user.has_perm("vms.operate_vm", vm))
    change = RequestKind(kind)
    form = VMChangeForm(request.POST or None, requester=request.user, vm=vm, kind=change)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            params = {k: data[k] for k in ("vcpus", "memory_mib", "size_gib", "count")
                      if k in data}
            vm_request = vm_change_request_create(
                requester=request.user, vm=vm, kind=change, purpose=data["purpose"],
                security_domain=data.get("security_domain"), faculty=data.get("faculty"),
                params=params)
        except ValidationError as exc:
            form_errors(form, exc)
        except PortalError as exc:
            messages.error(request, str(exc))
            return redirect("vms:vm_detail", pk=pk)
        else:
            messages.success(request, f"Request submitted: {vm_request.summary}.")
            return redirect("vms:request_detail", pk=vm_request.pk)
    return render(request, "vms/vm_change.html", {"vm": vm, "form": form, "kind": change})


@login_required
@require_GET
def operation_list(request: HttpRequest) -> HttpResponse:
    """List operations the user may see; admins may narrow to failed ones."""
    filters = OperationFilter(request.GET, request=request, queryset=Operation.objects
                              .visible_to(request.user).select_related("vm", "host",
                                                                       "requested_by")
                              .prefetch_related("children"))  # their progress, one query
    table = _table(request, OperationTable(filters.qs))
    return render(request, "vms/operation_list.html", {
        "table": table, "status": filters.form.cleaned_data.get("status") or "",
        "statuses": OperationStatus.choices,
        "attention": filters.form.cleaned_data.get("attention") == "1",
    })


@login_required
@require_POST
def operation_manage(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Retry or dismiss a failed operation (admins)."""
    op = get_object_or_404(Operation.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.retry_operation", op))
    try:
        if action == "retry":
            operation_retry(operation=op, actor=request.user)
            messages.success(request, f"Operation #{op.pk} queued again.")
        else:
            operation_dismiss(operation=op, actor=request.user)
            messages.success(request, f"Operation #{op.pk} dismissed.")
    except PortalError as exc:
        messages.error(request, str(exc))
    if op.vm_id and request.POST.get("next") == "vm":
        return redirect("vms:vm_detail", pk=op.vm_id)
    return redirect("vms:operation_list")


def _operable_vm(request: HttpRequest, pk: int):  # noqa: ANN202
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.operate_vm", vm))
    return vm


def _done(request: HttpRequest, pk: int, call, success: str) -> HttpResponse:  # noqa: ANN001
    """Call the service; an operation it queued is shown by the VM page's live part (`?op=`)."""
    try:
        result = call()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except PortalError as exc:
        messages.error(request, str(exc))
    else:
        if isinstance(result, Operation):
            # Not a flash message: the live part says queued, under way, then how it ended.
            return redirect(reverse("vms:vm_detail", args=[pk]) + f"?op={result.pk}")
        messages.success(request, success)
    return redirect("vms:vm_detail", pk=pk)


def _taken(snapshot: Snapshot) -> Operation | None:
    return snapshot.vm.operations.filter(kind=OperationKind.SNAPSHOT_CREATE).order_by(
        "-pk").first()


@login_required
@require_POST
def snapshot_create(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a snapshot of the VM."""
    vm = _operable_vm(request, pk)
    form = SnapshotForm(request.POST)
    if not form.is_valid():
        messages.error(request, text_refusals(form)
                       or "Give the snapshot a name of up to 64 characters.")
        return redirect("vms:vm_detail", pk=pk)
    return _done(request, pk, lambda: _taken(snapshot_take(
        vm=vm, actor=request.user, name=form.cleaned_data["name"],
        description=form.cleaned_data["description"])),
        f"Snapshot '{form.cleaned_data['name']}' of {vm.name} queued.")


@login_required
@require_POST
def snapshot_action(request: HttpRequest, pk: int, sid: int, action: str) -> HttpResponse:
    """Queue the return of the VM to a snapshot, or the deletion of the snapshot."""
    vm = _operable_vm(request, pk)
    snap = get_object_or_404(vm.snapshots, pk=sid)
    if not confirmed(request):
        return confirmation_page(request, snapshot_confirmation(snap, action))
    if action == "revert":
        return _done(request, pk, lambda: snapshot_revert(snapshot=snap, actor=request.user),
                     f"Revert of {vm.name} to '{snap.name}' queued.")
    return _done(request, pk, lambda: snapshot_delete(snapshot=snap, actor=request.user),
                 f"Deletion of snapshot '{snap.name}' queued.")


@login_required
@require_POST
def snapshot_schedule(request: HttpRequest, pk: int) -> HttpResponse:
    """Set which snapshot schedules the VM keeps."""
    vm = _operable_vm(request, pk)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose daily, weekly or monthly.")
        return redirect("vms:vm_detail", pk=pk)
    chosen = set(form.cleaned_data["frequencies"])
    return _done(request, pk, lambda: snapshot_schedule_set(vm=vm, actor=request.user,
                                                            frequencies=chosen),
                 f"Snapshot schedule of {vm.name}: {', '.join(sorted(chosen)) or 'none'}.")


@login_required
@require_POST
def disk_action(request: HttpRequest, pk: int, did: int, action: str) -> HttpResponse:
    """Queue the detaching or deleting of an extra disk."""
    vm = _operable_vm(request, pk)
    disk = get_object_or_404(vm.extra_disks, pk=did)
    kind = OperationKind.DISK_DETACH if action == "detach" else OperationKind.DISK_DELETE
    if kind == OperationKind.DISK_DELETE and not confirmed(request):
        return confirmation_page(request, disk_delete_confirmation(disk))
    return _done(request, pk, lambda: disk_action_request(disk=disk, kind=kind,
                                                          actor=request.user),
                 f"{kind.label} of the {disk.size_gib} GiB disk queued.")


@login_required
@require_POST
def vm_save_template(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue the making of a template from a stopped VM (admins)."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm("vms.make_template", vm))
    form = TemplateSaveForm(request.POST)
    name = form.cleaned_data["name"] if form.is_valid() else ""
    if refused := text_refusals(form):
        messages.error(request, refused)
        return redirect("vms:vm_detail", pk=pk)
    return _done(request, pk, lambda: template_save_request(vm=vm, actor=request.user,
                                                            name=name),
                 f"Template '{name}' from {vm.name} queued.")


@login_required
@require_POST
def vm_migrate(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue the move of a VM to the host chosen, or to the best fit (admins)."""
    vm = get_object_or_404(VirtualMachine.objects.visible_to(request.user), pk=pk)
    require(request.user.has_perm(MIGRATE, vm))
    chosen = request.POST.get("destination", "")
    destination = None
    if chosen:
        destination = next((h for h in migration_destinations(vm) if str(h.pk) == chosen), None)
        if destination is None:
            messages.error(request, "Choose one of the hosts listed, or the best fit.")
            return redirect("vms:vm_detail", pk=pk)
    return _done(request, pk, lambda: vm_migrate_request(vm=vm, actor=request.user,
                                                         destination=destination), "")


@login_required
@require_POST
def operation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Ask the worker to abort a migration under way (admins); the VM stays where it was."""
    op = get_object_or_404(Operation.objects.visible_to(request.user).select_related("vm"),
                           pk=pk)
    require(op.vm is not None and request.user.has_perm(MIGRATE, op.vm))
    return _done(request, op.vm_id, lambda: vm_migrate_cancel(operation=op, actor=request.user),
                 "")

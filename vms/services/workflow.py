"""The approval chain of VM requests: user -> faculty -> org-admin -> admin."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from core.accounts.models import Role, SSHKey, User
from core.accounts.predicates import is_portal_admin
from core.errors import PortalError
from core.validators import free_text_problem
from hosts.models import Template
from networking.models import PublicIP, SecurityDomain
from networking.services import security_domains_for

from ..models import (
    ApprovalStep,
    Decision,
    RequestKind,
    RequestStage,
    VirtualMachine,
    VMRequest,
)
from ..rules import is_requester
from ..selectors import faculty_choices, name_in_use, request_approver_emails
from .changes import ssh_port_request_check
from .credentials import key_snapshot
from .lifecycle import vm_change_apply, vm_create_from_request
from .notify import absolute_url, notify
from .resize_move import resize_move_problem, resize_needs_move
from .sizes import vm_sizes_validate

# The first stage a request waits at, by the requester's role: senior roles skip the
# steps below them.
FIRST_STAGE = {
    Role.USER: RequestStage.FACULTY,
    Role.FACULTY: RequestStage.ORG_ADMIN,
    Role.ORG_ADMIN: RequestStage.ADMIN,
    Role.ADMIN: RequestStage.ADMIN,
}
NEXT_STAGE = {
    RequestStage.FACULTY: RequestStage.ORG_ADMIN,
    RequestStage.ORG_ADMIN: RequestStage.ADMIN,
    RequestStage.ADMIN: RequestStage.APPROVED,
}


NAME_TAKEN = "A VM or pending request already has this name."


def _first_stage(requester: User, faculty: User | None,
                 errors: dict[str, str]) -> tuple[RequestStage, User | None]:
    if requester.organisation_id is None:
        raise ValidationError("Your account has no organisation; ask an admin to add you to one.")
    stage = FIRST_STAGE[Role(requester.role)]
    if stage != RequestStage.FACULTY:
        return stage, None
    if faculty is None:
        errors["faculty"] = "Choose the faculty who will approve this request."
    elif not faculty_choices(requester=requester).filter(pk=faculty.pk).exists():
        errors["faculty"] = "Choose a faculty member of your own organisation."
    return stage, faculty


def vm_request_create(
    *, requester: User, name: str, template: Template, vcpus: int, memory_mib: int,
    disk_gib: int, purpose: str, security_domain: SecurityDomain | None,
    faculty: User | None = None, public_ip: bool = False,
    ssh_keys: Sequence[SSHKey] = (), generate_password: bool = False,
) -> VMRequest:
    """Submit a request for a new VM at the first stage the requester's role allows."""
    errors: dict[str, str] = {}
    stage, faculty = _first_stage(requester, faculty, errors)
    _check_credentials(requester, template, ssh_keys, generate_password, errors)
    if not template.is_active:
        errors["template"] = "This template is no longer offered."
    if security_domain is None:
        errors["security_domain"] = "Choose the security domain the VM's network joins."
    elif not security_domains_for(requester).filter(pk=security_domain.pk).exists():
        errors["security_domain"] = "This security domain is not offered to your organisation."
    if name_in_use(name):
        errors["name"] = NAME_TAKEN
    try:
        vm_sizes_validate(template=template, vcpus=vcpus, memory_mib=memory_mib,
                          disk_gib=disk_gib)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    _check_purpose(purpose, missing="Say what the VM is for.", what="purpose", errors=errors)

    request = VMRequest(
        requester=requester, organisation_id=requester.organisation_id, faculty=faculty,
        name=name, template=template, vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib,
        purpose=purpose.strip(), stage=stage, security_domain=security_domain,
        public_ip=public_ip, ssh_keys=key_snapshot(ssh_keys),
        generate_password=generate_password,
    )
    request.full_clean()
    return _submit(request, clash=ValidationError(
        {"name": NAME_TAKEN}))


def _check_purpose(purpose: str, *, missing: str, what: str, errors: dict[str, str]) -> None:
    """Refuse an empty or unsafe purpose, with what was found wrong before it."""
    if not purpose.strip():
        errors["purpose"] = missing
    elif problem := free_text_problem(purpose, what=what, multiline=True):
        errors["purpose"] = problem
    if errors:
        raise ValidationError(errors)


def _submit(request: VMRequest, *, clash: Exception) -> VMRequest:
    """Save the request with its submission step and tell its approvers; clash on a twin."""
    try:
        with transaction.atomic():
            request.save()
            ApprovalStep.objects.create(request=request, actor=request.requester,
                                        stage=request.stage, decision=Decision.SUBMITTED)
    except IntegrityError as exc:
        raise clash from exc
    _notify_approvers(request)
    return request


def _check_credentials(requester: User, template: Template, ssh_keys: Sequence[SSHKey],
                       generate_password: bool, errors: dict[str, str]) -> None:
    """Refuse keys of someone else, and credentials a template without cloud-init cannot take."""
    if any(key.owner_id != requester.pk for key in ssh_keys):
        errors["ssh_keys"] = "Choose among your own SSH keys."
    elif (ssh_keys or generate_password) and not template.cloud_init:
        errors["ssh_keys" if ssh_keys else "generate_password"] = (
            f"Template {template.name} does not take cloud-init, so it cannot be given SSH "
            "keys or a password; untick them or choose another template.")


def vm_change_request_create(
    *, requester: User, vm: VirtualMachine, kind: RequestKind, purpose: str,
    security_domain: SecurityDomain | None = None, faculty: User | None = None,
    params: dict | None = None,
) -> VMRequest:
    """Submit a change to an existing VM; it climbs the same approval chain as a new VM."""
    errors: dict[str, str] = {}
    if not requester.has_perm("vms.operate_vm", vm) or not vm.is_live:
        raise PortalError(f"You may not ask for changes to {vm.name}.")
    stage, faculty = _first_stage(requester, faculty, errors)
    if kind == RequestKind.NETWORK:
        offered = security_domains_for(vm.owner)
        if security_domain is None:
            errors["security_domain"] = "Choose the security domain to move to."
        elif not offered.filter(pk=security_domain.pk).exists():
            errors["security_domain"] = "This security domain is not offered to the VM's owner."
        elif security_domain.pk == vm.security_domain_id:
            errors["security_domain"] = f"{vm.name} is already in {security_domain}."
    elif kind == RequestKind.PUBLIC_IP:
        if PublicIP.objects.filter(vm=vm).exists():
            raise PortalError(f"{vm.name} already has a public IP address.")
    elif kind == RequestKind.SSH_PORT:
        ssh_port_request_check(vm)
    elif kind in (RequestKind.RESIZE, RequestKind.DISK, RequestKind.CLONE):
        params = _change_params(vm, kind, params or {}, errors)
    else:
        raise PortalError(f"'{kind}' is not a change the portal makes.")
    _check_purpose(purpose, missing="Say why the change is needed.", what="reason",
                   errors=errors)
    request = VMRequest(
        kind=kind, target=vm, requester=requester, organisation=vm.organisation,
        faculty=faculty, name=vm.name, template=vm.template, vcpus=vm.vcpus,
        memory_mib=vm.memory_mib, disk_gib=vm.disk_gib, purpose=purpose.strip(), stage=stage,
        security_domain=security_domain if kind == RequestKind.NETWORK else None,
        public_ip=kind == RequestKind.PUBLIC_IP, params=params or {},
    )
    request.full_clean(validate_constraints=False)
    return _submit(request, clash=PortalError(
        f"A change to {vm.name} already waits for approval."))


def _change_params(vm: VirtualMachine, kind: RequestKind, params: dict,
                   errors: dict[str, str]) -> dict:
    """Check what a resize, disk or clone request asks for; return what is stored."""
    def number(key: str) -> int | None:
        try:
            return int(params.get(key))
        except (TypeError, ValueError):
            errors[key] = "Give a whole number."
            return None

    if kind == RequestKind.RESIZE:
        vcpus, memory = number("vcpus"), number("memory_mib")
        # Each size is checked even when the other is missing, so one round shows every error.
        try:
            vm_sizes_validate(template=vm.template, vcpus=vcpus, memory_mib=memory,
                              disk_gib=vm.disk_gib)
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                errors.setdefault(key, messages[0])
        if (vcpus, memory) == (vm.vcpus, vm.memory_mib):
            errors["vcpus"] = f"{vm.name} already has these sizes."
        if errors or not resize_needs_move(vm, vcpus, memory):
            return {"vcpus": vcpus, "memory_mib": memory}
        # Its host has no room: the approved resize moves it to a host that has, if any.
        problem = resize_move_problem(vm, vcpus, memory)
        if problem:
            errors["memory_mib"] = problem
        return {"vcpus": vcpus, "memory_mib": memory, "move": True}
    if kind == RequestKind.DISK:
        size = number("size_gib")
        if size is not None:
            try:
                vm_sizes_validate(template=vm.template, vcpus=vm.vcpus,
                                  memory_mib=vm.memory_mib, disk_gib=vm.disk_gib,
                                  extra_disk_gib=size)
            except ValidationError as exc:
                errors.update({k: v[0] for k, v in exc.message_dict.items()})
        limit = settings.PORTAL["MAX_EXTRA_DISKS"]
        if vm.extra_disks.count() >= limit:
            raise PortalError(f"{vm.name} already has {limit} extra disks, the most a VM may "
                              "have.")
        return {"size_gib": size}
    count = number("count")
    limit = settings.PORTAL["MAX_CLONES"]
    if count is not None and not 1 <= count <= limit:
        errors["count"] = f"Ask for 1 to {limit} copies."
        count = None
    names = [f"{vm.name[:55]}-copy{i}" for i in range(1, (count or 0) + 1)]
    taken = [n for n in names if name_in_use(n)]
    if taken:
        errors["count"] = f"A VM or request is already called {', '.join(taken)}."
    return {"count": count, "names": names}


def vm_change_params_errors(*, vm: VirtualMachine, kind: RequestKind,
                            params: dict) -> dict[str | None, str]:
    """Return what is wrong with a resize, disk or clone request's numbers, by field.

    The change form asks this while it checks its other fields, so every error shows at once;
    a refusal of the whole change comes under None.
    """
    errors: dict[str | None, str] = {}
    try:
        _change_params(vm, kind, params, errors)
    except PortalError as exc:
        errors[None] = str(exc)
    return errors


def _notify_approvers(request: VMRequest) -> None:
    notify(
        recipients=request_approver_emails(request),
        subject=f"Request {request.name} awaits your approval",
        body=(f"{request.requester} asks for VM {request.name} "
              f"({request.vcpus} vCPUs, {request.memory_mib} MiB, {request.disk_gib} GiB).\n"
              f"Purpose: {request.purpose}\n\n{absolute_url('vms:approvals')}"),
    )


OWN_REQUEST_MESSAGE = "You cannot approve your own request; another approver must decide it."


def _lock_for_decision(request: VMRequest, actor: User, seen_stage: str | None) -> VMRequest:
    locked = VMRequest.objects.select_for_update().get(pk=request.pk)
    if not locked.is_pending:
        raise PortalError(f"Request {locked.name} is already {locked.get_stage_display().lower()}.")
    if seen_stage is not None and locked.stage != seen_stage:
        raise PortalError(
            f"Request {locked.name} has moved on to '{locked.get_stage_display()}' since you "
            "opened it; nothing was changed."
        )
    if is_requester.test(actor, locked):
        raise PortalError(OWN_REQUEST_MESSAGE)
    if not actor.has_perm("vms.decide_request", locked):
        raise PortalError(f"You may not decide on request {locked.name} at this stage.")
    return locked


def _check_reason(reason: str) -> None:
    if problem := free_text_problem(reason, what="reason", multiline=True):
        raise ValidationError({"reason": problem})


def vm_request_approve(*, request: VMRequest, actor: User, reason: str = "",
                       seen_stage: str | None = None) -> VMRequest:
    """Approve the request at its stage; an admin's approval is final and installs the VM."""
    _check_reason(reason)
    with transaction.atomic():
        locked = _lock_for_decision(request, actor, seen_stage)
        stage = RequestStage(locked.stage)
        ApprovalStep.objects.create(request=locked, actor=actor, stage=stage,
                                    decision=Decision.APPROVED, reason=reason.strip())
        locked.stage = (RequestStage.APPROVED if is_portal_admin.test(actor)
                        else NEXT_STAGE[stage])
        locked.full_clean()
        locked.save(update_fields=["stage", "updated_at"])
        if locked.stage == RequestStage.APPROVED:
            if locked.kind == RequestKind.NEW:
                vm_create_from_request(request=locked, actor=actor)
                body = (f"{actor} approved your request {locked.name}. The VM is being "
                        f"installed; follow it at {absolute_url('vms:vm_list')}")
            else:
                vm_change_apply(request=locked, actor=actor)
                body = (f"{actor} approved your request: {locked.summary}. The change is "
                        f"under way; follow it at "
                        f"{absolute_url('vms:vm_detail', locked.target_id)}")
        else:
            body = (f"{actor} approved your request {locked.name}; it now waits for "
                    f"{locked.get_stage_display().lower().replace('awaiting ', 'the ')}.")
            _notify_approvers(locked)
        if reason.strip():
            body += f"\n\nReason: {reason.strip()}"
        notify(recipients=[locked.requester.email],
               subject=f"Request {locked.name} approved by {actor.get_username()}", body=body)
    return locked


def vm_request_reject(*, request: VMRequest, actor: User, reason: str,
                      seen_stage: str | None = None) -> VMRequest:
    """Reject the request with a reason; nothing is installed."""
    if not reason.strip():
        raise ValidationError({"reason": "Give a reason for the rejection."})
    _check_reason(reason)
    with transaction.atomic():
        locked = _lock_for_decision(request, actor, seen_stage)
        ApprovalStep.objects.create(request=locked, actor=actor, stage=locked.stage,
                                    decision=Decision.REJECTED, reason=reason.strip())
        locked.stage = RequestStage.REJECTED
        locked.save(update_fields=["stage", "updated_at"])
        notify(recipients=[locked.requester.email],
               subject=f"Request {locked.name} rejected",
               body=f"{actor} rejected your request {locked.name}.\n\nReason: {reason.strip()}")
    return locked


def vm_request_cancel(*, request: VMRequest, actor: User) -> VMRequest:
    """Withdraw a pending request on its requester's behalf."""
    with transaction.atomic():
        locked = VMRequest.objects.select_for_update().get(pk=request.pk)
        if not actor.has_perm("vms.cancel_request", locked):
            raise PortalError(f"Request {locked.name} can no longer be cancelled.")
        ApprovalStep.objects.create(request=locked, actor=actor, stage=locked.stage,
                                    decision=Decision.CANCELLED)
        locked.stage = RequestStage.CANCELLED
        locked.save(update_fields=["stage", "updated_at"])
    return locked

"""Who may see and act on VMs, requests and operations; imported by `VmsConfig.ready()`."""

from __future__ import annotations

import rules
from django.db.models import Q

from core.accounts.models import Role
from core.accounts.predicates import in_own_organisation, is_portal_admin
from operations.models import Operation, visible_targets_register

from .models import RequestStage, VirtualMachine, VMRequest


@rules.predicate
def is_owner(user, vm) -> bool:  # noqa: ANN001
    """Return whether the user owns the VM."""
    return vm is not None and user.pk is not None and vm.owner_id == user.pk


@rules.predicate
def is_signed_in(user) -> bool:  # noqa: ANN001
    """Return whether the user is signed in with an active account."""
    return bool(user.is_authenticated and user.is_active)


@rules.predicate
def sees_vm(user, vm) -> bool:  # noqa: ANN001
    """Return whether the VM is among those the user sees (`VirtualMachine.visible_to`)."""
    return vm is not None and VirtualMachine.objects.visible_to(user).filter(pk=vm.pk).exists()


@rules.predicate
def sees_request(user, request) -> bool:  # noqa: ANN001
    """Return whether the request is among those the user sees (`VMRequest.visible_to`)."""
    return (request is not None
            and VMRequest.objects.visible_to(user).filter(pk=request.pk).exists())


@rules.predicate
def is_requester(user, request) -> bool:  # noqa: ANN001
    """Return whether the user made the request: nobody decides their own, admins included."""
    return (request is not None and request.requester_id is not None
            and request.requester_id == user.pk)


@rules.predicate
def is_pending(user, request) -> bool:  # noqa: ANN001
    """Return whether the request still waits for a decision."""
    return request is not None and request.is_pending


@rules.predicate
def is_its_faculty(user, request) -> bool:  # noqa: ANN001
    """Return whether the request waits for its faculty and the user is that faculty."""
    return (request.stage == RequestStage.FACULTY and request.faculty_id == user.pk
            and getattr(user, "role", None) == Role.FACULTY)


@rules.predicate
def is_its_org_admin(user, request) -> bool:  # noqa: ANN001
    """Return whether the request waits for its org-admin and the user is one of them."""
    return request.stage == RequestStage.ORG_ADMIN and in_own_organisation.test(user, request)


@rules.predicate
def has_approver_role(user) -> bool:  # noqa: ANN001
    """Return whether the user's role approves requests: faculty or org-admin."""
    return getattr(user, "role", None) in (Role.FACULTY, Role.ORG_ADMIN)


@rules.predicate
def sees_operation(user, operation) -> bool:  # noqa: ANN001
    """Return whether the operation is among those the user sees (`Operation.visible_to`)."""
    return (operation is not None
            and Operation.objects.visible_to(user).filter(pk=operation.pk).exists())


def operations_on_seen_vms(user) -> Q:  # noqa: ANN001
    """Select the operations on the VMs the user sees."""
    return Q(vm__in=VirtualMachine.objects.visible_to(user))


visible_targets_register(operations_on_seen_vms)
rules.add_perm("vms.view_vm", sees_vm)
# Start, stop, delete, snapshots, disks, changes and the console.
rules.add_perm("vms.operate_vm", is_portal_admin | is_owner | in_own_organisation)
rules.add_perm("vms.view_vm_password", is_signed_in & is_owner)  # the owner alone
rules.add_perm("vms.make_template", is_portal_admin)
rules.add_perm("vms.apply_change", is_portal_admin)  # carry out a fully approved change
rules.add_perm("vms.migrate_vm", is_portal_admin)  # move a VM to another host, or cancel it
rules.add_perm("vms.view_request", sees_request)
rules.add_perm("vms.decide_request",
               is_pending & ~is_requester
               & (is_portal_admin | is_its_faculty | is_its_org_admin))
rules.add_perm("vms.cancel_request", is_pending & is_requester)
# Admins, faculty and org-admins have requests to decide; the menu shows them Approvals.
rules.add_perm("vms.approve_requests", is_portal_admin | has_approver_role)
rules.add_perm("vms.view_operation", sees_operation)
rules.add_perm("vms.retry_operation", is_portal_admin)  # retry or dismiss a failed one

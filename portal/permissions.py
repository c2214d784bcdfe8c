"""The one permission path: what each user may see and do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet
from django.http import Http404

from portal.accounts.models import Role

if TYPE_CHECKING:
    from hosts.models import Host
    from portal.accounts.models import User
    from vms.models import Operation, VirtualMachine, VMRequest


def is_admin(user: User) -> bool:
    """Return whether the user administers the whole portal."""
    return bool(user.is_authenticated and user.is_active and user.is_portal_admin)


def _org_admin_of(user: User) -> bool:
    return user.role == Role.ORG_ADMIN and user.organisation_id is not None


def requests_visible_to(user: User) -> QuerySet[VMRequest]:
    """Narrow VM requests to those the user may see."""
    from vms.models import VMRequest

    qs = VMRequest.objects.all()
    if is_admin(user):
        return qs
    q = Q(requester=user) | Q(faculty=user)
    if _org_admin_of(user):
        q |= Q(organisation_id=user.organisation_id)
    return qs.filter(q)


def requests_awaiting(user: User) -> QuerySet[VMRequest]:
    """Narrow VM requests to those waiting for this user's decision."""
    from vms.models import RequestStage, VMRequest

    # Never one's own request: another approver must decide it.
    qs = VMRequest.objects.exclude(requester_id=user.pk)
    if is_admin(user):
        return qs.filter(stage__in=[RequestStage.FACULTY, RequestStage.ORG_ADMIN,
                                    RequestStage.ADMIN])
    q = Q(stage=RequestStage.FACULTY, faculty=user)
    if _org_admin_of(user):
        q |= Q(stage=RequestStage.ORG_ADMIN, organisation_id=user.organisation_id)
    return qs.filter(q)


def is_own_request(user: User, request: VMRequest) -> bool:
    """Return whether the user made the request: nobody decides their own, admins included."""
    return request.requester_id is not None and request.requester_id == user.pk


def can_decide(user: User, request: VMRequest) -> bool:
    """Return whether the user may approve or reject the request at its current stage."""
    from vms.models import RequestStage

    if not request.is_pending or is_own_request(user, request):
        return False
    if is_admin(user):
        return True
    if request.stage == RequestStage.FACULTY:
        return request.faculty_id == user.pk and user.role == Role.FACULTY
    if request.stage == RequestStage.ORG_ADMIN:
        return _org_admin_of(user) and request.organisation_id == user.organisation_id
    return False


def can_cancel(user: User, request: VMRequest) -> bool:
    """Return whether the user may withdraw the request."""
    return request.is_pending and request.requester_id == user.pk


def vms_visible_to(user: User) -> QuerySet[VirtualMachine]:
    """Narrow VMs to those the user may see."""
    from vms.models import VirtualMachine

    qs = VirtualMachine.objects.all()
    if is_admin(user):
        return qs
    q = Q(owner=user) | Q(request__faculty=user)
    if _org_admin_of(user):
        q |= Q(organisation_id=user.organisation_id)
    return qs.filter(q)


def can_operate_vm(user: User, vm: VirtualMachine) -> bool:
    """Return whether the user may start, stop or delete the VM."""
    if is_admin(user):
        return True
    if vm.owner_id == user.pk:
        return True
    return _org_admin_of(user) and vm.organisation_id == user.organisation_id


def operations_visible_to(user: User) -> QuerySet[Operation]:
    """Narrow operations to those on VMs the user may see, or that the user asked for."""
    from vms.models import Operation

    qs = Operation.objects.all()
    if is_admin(user):
        return qs
    return qs.filter(Q(vm__in=vms_visible_to(user)) | Q(requested_by=user))


def can_manage_operations(user: User) -> bool:
    """Return whether the user may retry or dismiss failed operations."""
    return is_admin(user)


def hosts_visible_to(user: User) -> QuerySet[Host]:
    """Narrow hosts to those the user may see: all for admins, none otherwise."""
    from hosts.models import Host

    return Host.objects.all() if is_admin(user) else Host.objects.none()


def ssh_keys_visible_to(user: User) -> QuerySet:
    """Narrow SSH keys to the user's own: nobody else sees or deletes them, not even admins."""
    from portal.accounts.models import SSHKey

    return SSHKey.objects.filter(owner_id=user.pk) if user.is_authenticated \
        else SSHKey.objects.none()


def can_see_vm_password(user: User, vm: VirtualMachine) -> bool:
    """Return whether the user may be shown the VM's generated password: its owner only."""
    return bool(user.is_authenticated and user.is_active and vm.owner_id == user.pk)


def require(allowed: bool) -> None:
    """Answer 404 when the user may not act, so nothing reveals the object exists."""
    if not allowed:
        raise Http404


def people_visible_to(user: User) -> QuerySet[User]:
    """Narrow accounts to those the user manages: all for admins, their members for org-admins."""
    from portal.accounts.models import User as UserModel

    if is_admin(user):
        return UserModel.objects.all()
    if _org_admin_of(user):
        return UserModel.objects.filter(organisation_id=user.organisation_id)
    return UserModel.objects.none()


def can_manage_person(actor: User, person: User) -> bool:
    """Return whether the actor may change the person's role or access."""
    if is_admin(actor):
        return True
    return (_org_admin_of(actor) and person.organisation_id == actor.organisation_id
            and not person.is_portal_admin)


def grantable_roles(actor: User) -> list[str]:
    """Return the roles the actor may give: any for admins, up to org-admin for org-admins."""
    if is_admin(actor):
        return [Role.USER, Role.FACULTY, Role.ORG_ADMIN, Role.ADMIN]
    if _org_admin_of(actor):
        return [Role.USER, Role.FACULTY, Role.ORG_ADMIN]
    return []


def can_manage_organisations(user: User) -> bool:
    """Return whether the user may add organisations."""
    return is_admin(user)

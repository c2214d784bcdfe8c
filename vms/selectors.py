"""Reads about VMs that more than one page needs."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from core.accounts.models import Role, User
from core.accounts.predicates import is_portal_admin
from core.errors import PortalError
from hosts.models import Datastore
from hosts.selectors import datastore_usage
from networking.allocation import ssh_ports_offered
from networking.models import PublicIP, SSHPort
from operations.models import OperationKind, OperationStatus
from operations.registry import spec_for
from operations.requests import operation_retry_refusal

from .models import (
    ExtraDisk,
    RequestKind,
    RequestStage,
    SnapshotKind,
    VirtualMachine,
    VMRequest,
    VMState,
)
from .models.machines import LIVE_STATES
from .models.requests import PENDING_STAGES


@dataclass(frozen=True)
class SSHAccess:
    """How the VM's owner reaches it by SSH: from its network and from outside."""

    user: str
    inside: str  # the command from a machine on the VM's network; '' without an address
    outside: str  # through the public IP or the forwarded port; '' when neither exists
    public_ip: PublicIP | None
    ssh_port: SSHPort | None

    @property
    def best(self) -> str:
        """Return the command that works from the most places."""
        return self.outside or self.inside


def vm_ssh_access(vm: VirtualMachine) -> SSHAccess:
    """Return the ssh commands that reach the VM, as its pages show them."""
    # The guest's own login once cloud-init made one, else the owner's portal name.
    user = vm.login_user or vm.owner.get_username()
    ip = vm.private_ip
    public_ip = PublicIP.objects.filter(vm=vm).first()
    ssh_port = SSHPort.objects.filter(vm=vm).first()
    if public_ip is not None:
        outside = f"ssh {user}@{public_ip.address}"
    elif ssh_port is not None:
        outside = f"ssh -p {ssh_port.port} {user}@{ssh_port.address}"
    else:
        outside = ""
    return SSHAccess(user=user, inside=f"ssh {user}@{ip.address}" if ip is not None else "",
                     outside=outside, public_ip=public_ip, ssh_port=ssh_port)


def name_in_use(name: str) -> bool:
    """Return whether a live VM or a pending request already has this name."""
    return (
        VirtualMachine.objects.filter(name=name, state__in=LIVE_STATES).exists()
        or VMRequest.objects.filter(name=name, stage__in=PENDING_STAGES,
                                    kind=RequestKind.NEW).exists()
    )


def faculty_choices(*, requester: User):  # noqa: ANN201 - a queryset of users
    """Return the faculty who may approve the requester's requests."""
    return User.objects.filter(
        role=Role.FACULTY, organisation_id=requester.organisation_id, is_active=True
    ).exclude(pk=requester.pk)


def request_approver_emails(request: VMRequest) -> list[str]:
    """Return the addresses of those who decide the request at its stage, never its requester."""
    if request.stage == RequestStage.FACULTY and request.faculty:
        return [request.faculty.email]
    # Never the requester: nobody decides their own request.
    if request.stage == RequestStage.ORG_ADMIN:
        return list(User.objects.filter(role=Role.ORG_ADMIN, is_active=True,
                                        organisation_id=request.organisation_id)
                    .exclude(pk=request.requester_id).values_list("email", flat=True))
    if request.stage == RequestStage.ADMIN:
        return list(User.objects.filter(role=Role.ADMIN, is_active=True)
                    .exclude(pk=request.requester_id).values_list("email", flat=True))
    return []


def datastore_with_room(vm: VirtualMachine, size_gib: int) -> Datastore:
    """Return a datastore of the VM's host with room for a disk of this size."""
    stores = Datastore.objects.filter(hosts=vm.host_id).order_by(
        "-pk" if vm.datastore_id is None else "pk")
    reasons = []
    for ds in sorted(stores, key=lambda d: d.pk != vm.datastore_id):
        if not ds.capacity_gib:
            return ds
        used = datastore_usage(ds)
        if ds.capacity_gib - used >= size_gib:
            return ds
        reasons.append(f"{ds.name} has {ds.capacity_gib - used} GiB free")
    raise PortalError(f"No datastore of {vm.host} has {size_gib} GiB free"
                      f"{' (' + '; '.join(reasons) + ')' if reasons else ''}.")


# The actions the VM page offers as buttons, in this order; the operation registry says from
# which states each may be asked for. The SSH port's Release sits with its ssh line instead.
PAGE_ACTIONS = (OperationKind.START, OperationKind.SHUTDOWN, OperationKind.DESTROY,
                OperationKind.REBOOT, OperationKind.SUSPEND, OperationKind.RESUME,
                OperationKind.DELETE, OperationKind.PUBLIC_IP_RELEASE)


# The states of a VM that exists on its host: only those offer snapshots, schedules and disks.
INSTALLED_STATES = (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED,
                    VMState.UNKNOWN)


def _gives_way(kind: str, active: object | None) -> bool:
    """Return whether nothing is under way, or what is under way gives way to this kind."""
    if active is None:
        return True
    spec = spec_for(kind)
    return spec is not None and active.kind in spec.preempts


def _startable(kind: str, vm: VirtualMachine) -> bool:
    spec = spec_for(kind)
    states = spec.request_states if spec is not None else ()
    return states is None or vm.state in states


def vm_page(*, vm: VirtualMachine, user: User) -> dict:
    """Return what the VM's page shows the user: operations, actions, snapshots, disks, SSH."""
    ops = vm.operations.select_related("requested_by")[:10]
    active_op = next((op for op in ops if op.is_active), None)
    active = active_op is not None
    can_operate = user.has_perm("vms.operate_vm", vm)
    ssh = vm_ssh_access(vm)
    public_ip, ssh_port = ssh.public_ip, ssh.ssh_port
    actions = []
    if can_operate:
        # While a shut down waits, Force off is still offered: its spec pre-empts the wait.
        actions = [kind for kind in PAGE_ACTIONS if _startable(kind, vm)
                   and _gives_way(kind, active_op)
                   and (kind != OperationKind.PUBLIC_IP_RELEASE or public_ip is not None)]
    pending_change = vm.change_requests.filter(stage__in=PENDING_STAGES).first()
    installed = vm.state in INSTALLED_STATES
    snapshots = list(vm.snapshots.all())
    # A VM whose last operation died half-way: say what is left, offer Retry and Delete.
    attention_op = None
    if vm.attention and not active:
        attention_op = next((op for op in ops if op.status == OperationStatus.FAILED), None)
    return {
        "attention_op": attention_op,
        "can_retry_attention": (attention_op is not None
                                and user.has_perm("vms.retry_operation", attention_op)
                                and operation_retry_refusal(attention_op) is None),
        "can_delete_attention": (can_operate and not active
                                 and _startable(OperationKind.DELETE, vm)),
        "snapshots": snapshots,
        "manual_snapshots": sum(1 for snap in snapshots if snap.kind == SnapshotKind.MANUAL),
        "max_snapshots": settings.PORTAL["MAX_SNAPSHOTS"],
        "disks": vm.extra_disks.select_related("datastore"),
        "schedules": set(vm.snapshot_schedules.values_list("frequency", flat=True)),
        "can_snapshot": (can_operate and not active
                         and _startable(OperationKind.SNAPSHOT_CREATE, vm)),
        "vm": vm,
        "ip": vm.private_ip,
        "public_ip": public_ip,
        "ssh_port": ssh_port,
        "ssh": ssh,
        "ssh_ports_offered": ssh_ports_offered(),
        "can_release_ssh_port": (can_operate and not active and ssh_port is not None
                                 and _startable(OperationKind.SSH_PORT_RELEASE, vm)),
        "pending_change": pending_change,
        # A change request is asked for in the states a network move may start from.
        "can_change": (can_operate and _startable(OperationKind.NETWORK_MOVE, vm)
                       and pending_change is None),
        "operations": ops,
        "active": active,
        "active_op": active_op,
        "installed": installed,
        # What the rest of the page was drawn for: the live part reloads it when this changes.
        "page_key": ("installed" if installed else "deleted" if vm.state == VMState.DELETED
                     else "not-installed"),
        "actions": [(k.value, k.label) for k in actions],
        "can_operate": can_operate,
        "can_reveal_password": (bool(vm.password_once)
                                and user.has_perm("vms.view_vm_password", vm)),
        "is_admin": is_portal_admin.test(user),
    }


def volumes_in_use() -> set[str]:
    """Return the names of every volume the database accounts for, in any datastore.

    VM disks and seeds (named by the VM's UUID) and extra disks (random names) are unique
    across datastores; a deleted VM's volumes should be gone, so they count as orphans.
    """
    names = set(ExtraDisk.objects.values_list("volume_name", flat=True))
    for vm in VirtualMachine.objects.exclude(state=VMState.DELETED).only("uuid"):
        names.update((vm.volume_name, vm.seed_volume_name))
    return names


def host_running_vm_names(host: object) -> list[str]:
    """Return the names of the VMs on the host that are neither shut off nor deleted."""
    return list(VirtualMachine.objects.filter(host=host)
                .exclude(state__in=[VMState.SHUTOFF, VMState.DELETED])
                .order_by("name").values_list("name", flat=True))

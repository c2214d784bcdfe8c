"""What the portal asks before a destructive action: the words of its confirmation page.

Every destructive action's POST without `confirmed=1` answers with a page that says what will
happen and offers Confirm (the same POST with `confirmed=1`) and Back; nothing changes until
then, with or without JavaScript (`core.views.confirmation_page` renders it; with JavaScript,
`static/portal/portal.js` asks in a dialog instead and adds `confirmed=1` itself). Actions
that can be undone or repeated (start, shut down, snapshots taken) ask nothing.
"""

from __future__ import annotations

from django.urls import reverse

from core.views import Confirmation
from networking.models import PublicIP, SSHPort
from operations.models import OperationKind

from .models import ExtraDisk, Snapshot, VirtualMachine, VMRequest


def _vm_back(vm: VirtualMachine) -> str:
    return reverse("vms:vm_detail", args=[vm.pk])


def vm_action_confirmation(vm: VirtualMachine, kind: OperationKind) -> Confirmation | None:
    """Return the question to ask before this action on the VM, or None when none is needed."""
    back = _vm_back(vm)
    if kind == OperationKind.DESTROY:
        waiting = vm.operations.active().filter(kind=OperationKind.SHUTDOWN).exists()
        return Confirmation(
            title=f"Force off {vm.name}?",
            consequences=(
                f"Force off cuts the power of {vm.name} at once, like pulling the plug: its "
                "programs are not told, and whatever they had not yet written to disk is lost.",
                *((("The shut down now waiting for the guest stops waiting and gives way to "
                    "Force off."),) if waiting else ()),
                f"The disk of {vm.name} is kept; you can start it again afterwards.",
            ),
            button="Force off", back_url=back)
    if kind == OperationKind.DELETE:
        reach = []
        if PublicIP.objects.filter(vm=vm).exists():
            reach.append("its public IP")
        if SSHPort.objects.filter(vm=vm).exists():
            reach.append("its SSH port")
        given = ", ".join(["its private IP address", *reach, "its console port"])
        return Confirmation(
            title=f"Delete {vm.name}?",
            consequences=(
                f"{vm.name} is removed for good: it is switched off, and its disk, extra disks "
                "and snapshots are erased. This cannot be undone.",
                f"{given[0].upper()}{given[1:]} go back to the pool.",
                "To have a VM again you ask for a new one, which needs approval again.",
            ),
            button="Delete", back_url=back)
    if kind == OperationKind.PUBLIC_IP_RELEASE:
        public = PublicIP.objects.filter(vm=vm).first()
        address = f" {public.address}" if public is not None else ""
        return Confirmation(
            title=f"Release the public IP of {vm.name}?",
            consequences=(
                f"{vm.name} can no longer be reached from outside at{address or ' its public IP'}"
                "; it keeps its private address.",
                "The address goes back to the pool: asking for one again needs approval and "
                "may give another address.",
            ),
            button="Release the public IP", back_url=back)
    if kind == OperationKind.SSH_PORT_RELEASE:
        port = SSHPort.objects.filter(vm=vm).first()
        which = f" (port {port.port})" if port is not None else ""
        return Confirmation(
            title=f"Release the SSH port of {vm.name}?",
            consequences=(
                f"{vm.name} can no longer be reached by SSH from outside{which}; machines on "
                "its own network still reach it.",
                "The port goes back to the pool: asking for one again needs approval and may "
                "give another port.",
            ),
            button="Release the SSH port", back_url=back)
    return None


def snapshot_confirmation(snapshot: Snapshot, action: str) -> Confirmation:
    """Return the question to ask before reverting to or deleting a snapshot."""
    vm = snapshot.vm
    taken = snapshot.created_at.strftime("%Y-%m-%d %H:%M") if snapshot.created_at else ""
    if action == "revert":
        return Confirmation(
            title=f"Revert {vm.name} to the snapshot “{snapshot.name}”?",
            consequences=(
                f"{vm.name} goes back to how it was when “{snapshot.name}” was taken"
                + (f" ({taken})" if taken else "") + ": every change made since, on its disk "
                "and in its memory, is lost.",
                "The snapshot itself is kept.",
            ),
            button="Revert", back_url=_vm_back(vm))
    return Confirmation(
        title=f"Delete the snapshot “{snapshot.name}” of {vm.name}?",
        consequences=(
            f"The snapshot is erased: {vm.name} can no longer be returned to it. This cannot "
            "be undone.",
            f"{vm.name} itself is not changed.",
        ),
        button="Delete the snapshot", back_url=_vm_back(vm))


def disk_delete_confirmation(disk: ExtraDisk) -> Confirmation:
    """Return the question to ask before deleting an extra disk."""
    vm = disk.vm
    return Confirmation(
        title=f"Delete the {disk.size_gib} GiB disk of {vm.name}?",
        consequences=(
            "The disk and every file on it are erased (it is detached first if it is "
            "attached). This cannot be undone.",
            f"{vm.name} itself and its main disk are not changed.",
        ),
        button="Delete the disk", back_url=_vm_back(vm))


def request_cancel_confirmation(vm_request: VMRequest) -> Confirmation:
    """Return the question to ask before withdrawing a pending request."""
    return Confirmation(
        title=f"Cancel the request {vm_request.name}?",
        consequences=(
            "The request is withdrawn: those who were to approve it no longer see it, and "
            "nothing is made from it.",
            "To have it after all you submit a new request, which needs approval again.",
        ),
        button="Cancel the request",
        back_url=reverse("vms:request_detail", args=[vm_request.pk]))

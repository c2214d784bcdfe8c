"""What the operations engine asks of VMs: failure wording, attention, settling, retries."""

from __future__ import annotations

import logging

from django.utils import timezone

from hosts.virt import VirtError, power_state
from operations.models import Operation, OperationKind, OperationStatus
from operations.registry import TargetHooks, spec_for
from operations.undo import Step, recorded_steps_undo, step_label

from ..models import VirtualMachine, VMState
from ..signals import vm_started
from .domain import vm_hypervisor
from .notify import owner_tell_failure

logger = logging.getLogger(__name__)

# Kinds that make the VM: when one dies half-way, the VM is left as a failed install.
MAKES_THE_VM = (OperationKind.INSTALL, OperationKind.CLONE)
# Power actions: a later one that succeeded leaves a failed one nothing to do.
POWER_KINDS = (OperationKind.START, OperationKind.SHUTDOWN, OperationKind.DESTROY,
               OperationKind.REBOOT, OperationKind.SUSPEND, OperationKind.RESUME,
               OperationKind.SNAPSHOT_REVERT)
# Kinds after which the VM runs afresh: others (monitoring) start watching it at once.
STARTS_THE_VM = (*MAKES_THE_VM, OperationKind.START)

# What a VM's owner reads when the host could not do something; the raw text is for admins.
OWNER_FAILED = {
    OperationKind.INSTALL: "could not be installed and started on its host",
    OperationKind.START: "could not be started on its host",
    OperationKind.SHUTDOWN: "did not shut down (its system may not have answered the power "
                            "button); use Force off if it must stop now",
    OperationKind.DESTROY: "could not be forced off",
    OperationKind.REBOOT: "could not be rebooted",
    OperationKind.SUSPEND: "could not be suspended",
    OperationKind.RESUME: "could not be resumed",
    OperationKind.DELETE: "could not be removed from its host",
    OperationKind.SNAPSHOT_REVERT: "could not be returned to the snapshot",
    OperationKind.NETWORK_MOVE: "could not be moved to the other security domain; if it is "
                                "running, shut it down and retry",
    OperationKind.DISK_DETACH: "could not let go of the disk; if it is running, shut it down "
                               "and retry",
    OperationKind.PUBLIC_IP_ATTACH: "could not be given a public IP: the NAT box did not "
                                    "take the mapping",
    OperationKind.PUBLIC_IP_RELEASE: "could not give its public IP back: the NAT box did not "
                                     "remove the mapping",
    OperationKind.SSH_PORT_ATTACH: "could not be given an SSH port: the NAT box did not take "
                                   "the forwarding",
    OperationKind.SSH_PORT_RELEASE: "could not give its SSH port back: the NAT box did not "
                                    "remove the forwarding",
}

# What the owner can do next, where it is not simply to try again later.
OWNER_NEXT = {
    OperationKind.INSTALL: "You can delete it and ask for a new VM, or wait: an administrator "
                           "may retry the install once the cause is fixed.",
}


def _records_steps(op: Operation) -> bool:
    spec = spec_for(op.kind)
    return spec is not None and spec.records_steps


class VMHooks(TargetHooks):
    """The engine's questions about an operation on a VM."""

    def run_refusal(self, op: Operation) -> str | None:
        """Refuse to act on a deleted VM."""
        if VirtualMachine.objects.filter(pk=op.vm_id, state=VMState.DELETED).exists():
            return f"{op.vm} was deleted; nothing was done."
        return None

    def succeeded(self, op: Operation) -> None:
        """Clear the VM's attention mark; say when the VM was just installed or started."""
        VirtualMachine.objects.filter(pk=op.vm_id).exclude(attention="").update(attention="")
        if op.kind in STARTS_THE_VM:
            vm = VirtualMachine.objects.filter(pk=op.vm_id, state=VMState.RUNNING).first()
            if vm is not None:
                vm_started.send(sender=VirtualMachine, vm=vm)

    def failure_message(self, op: Operation) -> str:
        """Say what did not happen to the VM, and its state now after a power action."""
        kind = OperationKind(op.kind)
        what = OWNER_FAILED.get(kind, f"could not be changed: “{kind.label}” did not complete "
                                      "on its host")
        now = ""
        if kind in POWER_KINDS:
            # The handler observed the domain after the failure: say what the VM is now.
            state = VirtualMachine.objects.filter(pk=op.vm_id).values_list(
                "state", flat=True).first()
            if state:
                now = f" It is {VMState(state).label.lower()} now."
        then = OWNER_NEXT.get(kind, "Try again later, or ask an administrator for help if it "
                                    "keeps failing.")
        return f"The VM {op.vm.name} {what}; an administrator has been told.{now} {then}"

    def steps_undo(self, op: Operation, steps: list[Step]) -> list[Step]:
        """Give back a dead run's recorded steps on the VM."""
        vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
        return recorded_steps_undo(vm, steps)

    def attention(self, op: Operation, left: list[str], state_note: str = "") -> None:
        """Mark the VM as needing attention, saying what happened and what is left."""
        kind = OperationKind(op.kind).label
        text = f"{kind} (operation #{op.pk}) stopped half-way"
        if op.progress:
            text += f" while “{op.progress}”"
        text += f". {state_note}" if state_note else ". "
        if left:
            text += "Left behind: " + "; ".join(left) + "."
        elif _records_steps(op):
            text += "Everything it had taken was given back."
        else:
            text += "It may have left its work half-done; check the VM before using it."
        VirtualMachine.objects.filter(pk=op.vm_id).exclude(state=VMState.DELETED).update(
            attention=text)

    def settle(self, op: Operation) -> str:
        """Put the VM of a dead operation in the state it is really in; return it in words."""
        if op.kind in MAKES_THE_VM:
            VirtualMachine.objects.filter(pk=op.vm_id).update(state=VMState.FAILED)
            return "The VM was not installed."
        if op.kind == OperationKind.DELETE:
            return "The VM may be partly removed; delete it again."
        vm = VirtualMachine.objects.select_related("host").get(pk=op.vm_id)
        if vm.host is None:
            return ""
        try:
            facts = vm_hypervisor(vm).find_domain(vm.domain_name)
        except VirtError as exc:
            logger.warning("could not read the state of %s after operation %s died: %s", vm,
                           op.pk, exc)
            state = VMState.UNKNOWN
        else:
            state = power_state(facts.state if facts else None)
        VirtualMachine.objects.filter(pk=vm.pk).exclude(state=VMState.DELETED).update(
            state=state, state_checked_at=timezone.now())
        return f"The VM is {VMState(state).label.lower()} now."

    def retry_refusal(self, op: Operation) -> str | None:
        """Refuse a retry on a deleted VM, one superseded, or one its state no longer allows."""
        vm = VirtualMachine.objects.get(pk=op.vm_id)
        if vm.state == VMState.DELETED:
            return f"{vm.name} has been deleted; there is nothing to retry."
        if vm.state == VMState.DELETING and op.kind != OperationKind.DELETE:
            return f"{vm.name} is being deleted; there is nothing to retry."
        later = Operation.objects.filter(vm_id=vm.pk, status=OperationStatus.SUCCEEDED,
                                         created_at__gt=op.created_at)
        kinds = POWER_KINDS if op.kind in POWER_KINDS else (op.kind,)
        superseded = later.filter(kind__in=kinds).order_by("created_at").first()
        if superseded is not None:
            return (f"A later {superseded.get_kind_display().lower()} of {vm.name} succeeded "
                    f"(operation #{superseded.pk}); ask for what is wanted now instead.")
        spec = spec_for(op.kind)
        if spec is not None and spec.retry_states is not None and vm.state not in (
                spec.retry_states):
            return (f"{vm.name} is {vm.get_state_display().lower()} now; "
                    f"“{op.get_kind_display()}” no longer applies.")
        check = spec.retry_check if spec is not None else None
        return check(op) if check else None

    def tell_owner(self, op: Operation) -> None:
        """Mail the VM's owner about a failure they asked for."""
        owner_tell_failure(op)

    def reconcile(self) -> int:
        """Mark VMs left installing or deleting with nothing under way; return how many."""
        stuck = 0
        for vm in VirtualMachine.objects.filter(
                state__in=[VMState.INSTALLING, VMState.DELETING], attention="").exclude(
                pk__in=Operation.objects.active().filter(vm__isnull=False).values("vm_id")):
            vm_stuck_mark(vm)
            stuck += 1
        return stuck


def vm_stuck_mark(vm: VirtualMachine) -> None:
    """Mark a VM left installing or deleting with nothing under way as needing attention."""
    last = vm.operations.order_by("-created_at", "-id").first()
    if last is not None and last.steps:
        left_steps = recorded_steps_undo(vm, last.steps)
        Operation.objects.filter(pk=last.pk).update(steps=left_steps)
        left = [step_label(step) for step in left_steps]
    else:
        left = []
    if vm.state == VMState.INSTALLING:
        VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.FAILED)
        what = "The install stopped half-way and nothing is under way now."
    else:
        what = "The deletion stopped half-way and nothing is under way now; delete it again."
    text = what + (" Left behind: " + "; ".join(left) + "." if left else "")
    VirtualMachine.objects.filter(pk=vm.pk).update(attention=text)

"""Reads about VMs that more than one page needs."""

from __future__ import annotations

from dataclasses import dataclass

from networking.models import PublicIP, SSHPort

from .models import RequestKind, VirtualMachine, VMRequest
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

"""Steps every VM operation shares: its host's adapter, its domain spec, its observed state."""

from __future__ import annotations

from django.utils import timezone

from core.errors import PortalError
from hosts.virt import DomainFacts, Hypervisor, power_state, vnc_listen_address
from hosts.virt.domain_xml import DomainSpec
from networking.models import AttachMode, PrivateIP

from ..models import VirtualMachine, VMState

# The permission an owner's action on a VM needs (vms/rules.py declares it).
OPERATE = "vms.operate_vm"
# The permission carrying out an approved change needs: an admin's approval is the final one.
APPLY_CHANGE = "vms.apply_change"
# The states in which a VM may be changed through a request (resize, disk, clone, network...).
CHANGEABLE_STATES = (VMState.RUNNING, VMState.PAUSED, VMState.SHUTOFF, VMState.CRASHED)


def vm_hypervisor(vm: VirtualMachine) -> Hypervisor:
    """Return the adapter of the VM's host; refuse a VM that is on no host."""
    if vm.host is None:
        raise PortalError(f"{vm.name} is on no host; it was never installed.")
    return Hypervisor(vm.host.uri)


def vm_observe(vm: VirtualMachine, facts: DomainFacts | None) -> None:
    """Record the state libvirt reports for the VM's domain (unknown when it has none)."""
    if VirtualMachine.objects.filter(pk=vm.pk, state=VMState.DELETED).exists():
        return  # a deleted VM never comes back to its owner's list as "unknown"
    vm.state = VMState(power_state(facts.state if facts else None))
    vm.state_checked_at = timezone.now()
    vm.save(update_fields=["state", "state_checked_at"])


def vm_spec(vm: VirtualMachine, disk_path: str, ip: PrivateIP,
            seed_path: str | None = None) -> DomainSpec:
    """Return the domain spec of the VM on its host, with this disk, address and seed."""
    vlan = ip.vlan
    return DomainSpec(
        name=vm.domain_name, uuid=str(vm.uuid), domain_type=vm.host.accel,
        cpu_mode=vm.host.cpu_mode,
        vcpus=vm.vcpus, memory_mib=vm.memory_mib, disk_path=disk_path,
        network=vlan.network_name, mac=ip.mac, description=vm.purpose,
        portgroup=vlan.portgroup if vlan.attach == AttachMode.PORTGROUP else None,
        vlan_tag=vlan.tag if vlan.attach == AttachMode.TAG else None,
        vnc_port=vm.vnc_port, vnc_password=vm.vnc_password or None,
        vnc_listen=vnc_listen_address(vm.host.uri, vm.host.address),
        seed_path=seed_path,
        metadata={"vm-id": str(vm.pk), "owner": vm.owner.get_username(),
                  "organisation": vm.organisation.slug},
    )

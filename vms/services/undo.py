"""How the steps install and clone record are given back, registered with the engine.

The engine (`operations.undo`) gives back recorded steps newest first; this module says what
each of a VM's steps took and how to give it back, from any process.
"""

from __future__ import annotations

from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.vnc import vnc_port_release
from networking.allocation import ip_release
from networking.models import PrivateIP
from networking.services import dhcp_remove, nat_detach
from operations.undo import Step, step_register

from ..models import VirtualMachine


def _host(step: Step) -> Host:
    return Host.objects.get(pk=step["host"])


def _forget_host(vm: VirtualMachine, step: Step) -> None:
    VirtualMachine.objects.filter(pk=vm.pk).update(host=None, datastore=None)
    vm.host = vm.datastore = None


def _release_ip(vm: VirtualMachine, step: Step) -> None:
    ip_release(vm=vm)


def _release_vnc_port(vm: VirtualMachine, step: Step) -> None:
    vnc_port_release(vm=vm)


def _delete_volume(vm: VirtualMachine, step: Step) -> None:
    Hypervisor(_host(step).uri).delete_volume(str(step["pool"]), str(step["volume"]))


def _remove_dhcp(vm: VirtualMachine, step: Step) -> None:
    ip = PrivateIP.objects.select_related("vlan").get(address=step["address"])
    ip.mac = str(step["mac"])  # the entry written named this MAC, whoever holds the row now
    vm.host = _host(step)
    dhcp_remove(vm=vm, ip=ip)


def _undefine_domain(vm: VirtualMachine, step: Step) -> None:
    Hypervisor(_host(step).uri).undefine_domain(str(step["name"]))


def _detach_nat(vm: VirtualMachine, step: Step) -> None:
    nat_detach(vm=vm)


def steps_register() -> None:
    """Register with the engine how each step a VM's install or clone records is given back."""
    step_register("host", _forget_host, lambda s: "its place on the host",
                  kept_while_left=True)
    step_register("ip", _release_ip, lambda s: "its private IP address")
    step_register("vnc_port", _release_vnc_port, lambda s: "its VNC port")
    step_register("volume", _delete_volume, lambda s: (
        f"volume {s['volume']} in pool {s['pool']} on host {s.get('host_name')}"))
    step_register("dhcp", _remove_dhcp, lambda s: (
        f"DHCP entry {s['address']} ({s['mac']}) on host {s.get('host_name')}"))
    step_register("domain", _undefine_domain,
                  lambda s: f"domain {s['name']} on host {s.get('host_name')}")
    step_register("nat", _detach_nat, lambda s: "its public IP mapping on the NAT box")
    from .migration_steps import migration_steps_register

    migration_steps_register()

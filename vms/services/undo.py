"""Giving back what a failed operation took, in reverse order.

Two forms: closures for steps that only the running worker can undo (`undo_steps`), and
recorded steps (`Operation.steps`, plain JSON written before each step is taken) that any
process can undo, so a worker killed half-way leaves nothing that the reconciler cannot find
and give back (`recorded_steps_undo`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.vnc import vnc_port_release
from networking.allocation import ip_release
from networking.models import PrivateIP
from networking.services import dhcp_remove, nat_detach

from ..models import VirtualMachine

logger = logging.getLogger(__name__)

Steps = list[tuple[str, Callable[[], None]]]
Step = dict[str, object]


def undo_steps(owner: object, steps: Steps) -> None:
    """Run each undo step, newest first, carrying on past failures (they are logged)."""
    for what, step in reversed(steps):
        try:
            step()
        except Exception:  # keep undoing the rest; the reconciler reports what is left
            logger.exception("could not give back the %s of %s", what, owner)


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


# What gives back each kind of recorded step, and how it is named to people.
UNDO: dict[str, tuple[Callable[[VirtualMachine, Step], None], Callable[[Step], str]]] = {
    "host": (_forget_host, lambda s: "its place on the host"),
    "ip": (_release_ip, lambda s: "its private IP address"),
    "vnc_port": (_release_vnc_port, lambda s: "its VNC port"),
    "volume": (_delete_volume,
               lambda s: f"volume {s['volume']} in pool {s['pool']} on host {s.get('host_name')}"),
    "dhcp": (_remove_dhcp,
             lambda s: f"DHCP entry {s['address']} ({s['mac']}) on host {s.get('host_name')}"),
    "domain": (_undefine_domain, lambda s: f"domain {s['name']} on host {s.get('host_name')}"),
    "nat": (_detach_nat, lambda s: "its public IP mapping on the NAT box"),
}


def step_label(step: Step) -> str:
    """Return what a recorded step took, in words."""
    entry = UNDO.get(str(step.get("step")))
    return entry[1](step) if entry else str(step)


def recorded_steps_undo(vm: VirtualMachine, steps: list[Step]) -> list[Step]:
    """Give back recorded steps newest first; return those that could not be given back.

    The place on the host is kept while anything on it is left, so that deleting the VM
    later still finds and removes it.
    """
    left: list[Step] = []
    for step in reversed(steps):
        kind = str(step.get("step"))
        if kind == "host" and left:
            left.insert(0, step)
            continue
        entry = UNDO.get(kind)
        try:
            if entry is None:
                raise LookupError(f"no undo is known for step {kind!r}")
            entry[0](vm, step)
        except Exception:  # keep undoing the rest; what is left is recorded and shown
            logger.exception("could not give back the %s of %s", step_label(step), vm)
            left.insert(0, step)
    return left

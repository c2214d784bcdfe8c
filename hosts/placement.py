"""Choosing a host with room for a VM."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import Q

from core.errors import PortalError

from .models import Datastore, Host, HostStatus, Template
from .selectors import host_usage


class NoHostAvailable(PortalError):
    """No host has room for the VM."""


def host_choose(*, vcpus: int, memory_mib: int, template: Template,
                exclude: tuple[int, ...] = (), datastore: Datastore | None = None,
                reserved: Mapping[int, tuple[int, int]] | None = None) -> Host:
    """Lock and return the up host with the most free RAM that fits the VM.

    Candidates see the template's datastore, or `datastore` when given (a VM's disk's).
    `reserved` maps a host's id to vCPUs and MiB already promised to VMs not there yet (an
    evacuation's planned moves): they count as used.

    Call inside a transaction: the candidate rows stay locked until it ends, so two
    workers placing at once see each other's VMs.
    """
    candidates = list(
        Host.objects.select_for_update(of=("self",))
        .filter(status=HostStatus.UP,
                datastores=datastore if datastore is not None else template.datastore)
        .filter(~Q(accel=""))
        .exclude(pk__in=exclude)
        .order_by("pk")
    )
    best: tuple[int, Host] | None = None
    reasons = []
    for host in candidates:
        used_cpu, used_mem = host_usage(host)
        held_cpu, held_mem = (reserved or {}).get(host.pk, (0, 0))
        used_cpu, used_mem = used_cpu + held_cpu, used_mem + held_mem
        free_cpu = host.vcpu_capacity - used_cpu
        free_mem = host.memory_capacity_mib - used_mem
        if free_cpu >= vcpus and free_mem >= memory_mib:
            if best is None or free_mem > best[0]:
                best = (free_mem, host)
        else:
            reasons.append(f"{host.name} has {free_cpu} vCPUs and {free_mem} MiB free")
    if best is None:
        detail = "; ".join(reasons) if reasons else "no host is up with the template's datastore"
        raise NoHostAvailable(
            f"No host has {vcpus} vCPUs and {memory_mib} MiB of RAM free ({detail})."
        )
    return best[1]

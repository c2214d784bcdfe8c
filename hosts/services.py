"""Writes on hosts: reading their facts and comparing their domains with the portal's VMs."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from portal.errors import PortalError
from vms.models import Operation, OperationKind, VirtualMachine, VMState
from vms.services.operations import handles, operation_create

from .models import Datastore, Host
from .remote import RemoteError, fetch_host_key
from .virt import Hypervisor, VirtError

logger = logging.getLogger(__name__)


def host_register(*, name: str, uri: str, address: str = "", requested_by=None) -> Host:  # noqa: ANN001
    """Record a host and queue the reading of its CPUs, memory and acceleration."""
    host = Host(name=name, uri=uri, address=address)
    host.full_clean()
    with transaction.atomic():
        host.save()
        operation_create(kind=OperationKind.HOST_REFRESH, host=host, requested_by=requested_by)
    return host


@handles(OperationKind.HOST_REFRESH)
def host_refresh(op: Operation) -> str:
    """Read the host's CPUs, memory and acceleration and make its datastores' pools."""
    host = Host.objects.get(pk=op.host_id)
    if host.address and not host.ssh_host_key:
        # Recorded once, when the host is first read; every later SSH call checks it.
        try:
            key = fetch_host_key(host.address)
        except (RemoteError, OSError) as exc:
            raise PortalError(f"Could not read the SSH host key of {host.address}: {exc}") \
                from exc
        Host.objects.filter(pk=host.pk).update(ssh_host_key=key)
    hv = Hypervisor(host.uri)
    try:
        facts = hv.facts()
        for ds in Datastore.objects.filter(hosts=host):
            hv.ensure_pool(ds.pool_name, ds.path)
    except VirtError as exc:
        Host.objects.filter(pk=host.pk).update(last_error=str(exc))
        raise
    Host.objects.filter(pk=host.pk).update(
        vcpus=facts.cpus, memory_mib=facts.memory_mib, accel=facts.accel,
        last_seen_at=timezone.now(), last_error="",
    )
    return (f"{host.name}: {facts.cpus} CPUs, {facts.memory_mib} MiB, "
            f"{facts.accel.upper()} acceleration, libvirt {facts.libvirt_version}.")


STATE_FROM_LIBVIRT = {
    "running": VMState.RUNNING, "blocked": VMState.RUNNING, "shutdown": VMState.RUNNING,
    "paused": VMState.PAUSED, "pmsuspended": VMState.PAUSED, "shutoff": VMState.SHUTOFF,
    "crashed": VMState.CRASHED, "nostate": VMState.UNKNOWN,
}
# States the portal owns while an operation runs; the reconciler leaves them alone.
TRANSIENT = (VMState.PENDING, VMState.INSTALLING, VMState.DELETING, VMState.FAILED,
             VMState.DELETED)


def host_reconcile(*, host: Host) -> dict[str, list[str]]:
    """Compare the host's domains with the portal's VMs; report, never delete."""
    try:
        domains = {d.name: d for d in Hypervisor(host.uri).list_domains()}
    except VirtError as exc:
        Host.objects.filter(pk=host.pk).update(last_error=str(exc))
        return {"unknown": [], "missing": []}
    now = timezone.now()
    vms = list(VirtualMachine.objects.filter(host=host).exclude(state__in=TRANSIENT))
    known = {vm.domain_name for vm in VirtualMachine.objects.filter(host=host)
             .exclude(state=VMState.DELETED)}
    missing = []
    for vm in vms:
        facts = domains.get(vm.domain_name)
        if facts is None:
            missing.append(vm.name)
            new_state = VMState.UNKNOWN
        else:
            new_state = STATE_FROM_LIBVIRT.get(facts.state, VMState.UNKNOWN)
        if vm.state != new_state and not vm.operations.filter(
            status__in=["queued", "running"]
        ).exists():
            VirtualMachine.objects.filter(pk=vm.pk).update(state=new_state,
                                                           state_checked_at=now)
    unknown = sorted(set(domains) - known)
    Host.objects.filter(pk=host.pk).update(
        unknown_domains=unknown, missing_domains=sorted(missing), reconciled_at=now,
        last_seen_at=now, last_error="",
    )
    if unknown or missing:
        logger.warning("host %s: unknown domains %s, missing VMs %s", host.name, unknown,
                       missing)
    return {"unknown": unknown, "missing": sorted(missing)}

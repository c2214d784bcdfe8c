"""Comparing a host's domains and volumes with the portal's VMs: report, never delete."""

from __future__ import annotations

import logging

from django.utils import timezone

from hosts.health import host_error_record, host_reached
from hosts.models import Host
from hosts.services import host_orphan_volumes
from hosts.virt import Hypervisor, VirtError, power_state

from ..models import VirtualMachine, VMState
from ..selectors import volumes_in_use

logger = logging.getLogger(__name__)

# States the portal owns while an operation runs; the reconciler leaves them alone.
TRANSIENT = (VMState.PENDING, VMState.INSTALLING, VMState.DELETING, VMState.FAILED,
             VMState.DELETED)


def host_reconcile(*, host: Host) -> dict[str, list[str]]:
    """Compare the host's domains and datastore volumes with the portal's; report, never delete."""
    hv = Hypervisor(host.uri)
    try:
        domains = {d.name: d for d in hv.list_domains()}
    except VirtError as exc:
        host_error_record(host_id=host.pk, error=exc)
        return {"unknown": [], "missing": [], "orphans": [], "error": str(exc)}
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
            new_state = power_state(facts.state)
        if vm.state != new_state and not vm.operations.active().exists():
            VirtualMachine.objects.filter(pk=vm.pk).update(state=new_state,
                                                           state_checked_at=now)
    unknown = sorted(set(domains) - known)
    orphans = host_orphan_volumes(hv=hv, host=host, in_use=volumes_in_use())
    Host.objects.filter(pk=host.pk).update(
        unknown_domains=unknown, missing_domains=sorted(missing), orphan_volumes=orphans,
        reconciled_at=now,
    )
    host_reached(host_id=host.pk)
    if unknown or missing or orphans:
        logger.warning("host %s: unknown domains %s, missing VMs %s, orphan volumes %s",
                       host.name, unknown, missing, orphans)
    return {"unknown": unknown, "missing": sorted(missing), "orphans": orphans}

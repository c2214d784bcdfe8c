"""Acting on what the reconciler found on a host: orphan domains and orphan volumes.

The reconciler (`vms.services.reconcile`) only reports. An admin acts on a finding from the
host page; each action is an Operation on the host, carried out by a worker, which checks
again on the host what the finding said before it deletes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.db import transaction

from core.errors import PortalError
from hosts.models import Datastore, Host
from hosts.services import host_orphan_volumes
from hosts.virt import Hypervisor
from hosts.virt.domain_xml import parse_domain_xml
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request
from operations.runner import operation_progress

from ..models import VirtualMachine
from ..selectors import volumes_in_use

# Acting on a host's findings is an admin's job (hosts/rules.py).
MANAGE_HOST = "hosts.manage_host"
FINDING_KINDS = (OperationKind.DOMAIN_ADOPT, OperationKind.DOMAIN_REMOVE,
                 OperationKind.VOLUME_REMOVE)


def finding_busy_check(host: Host, *, key: str, value: str) -> None:
    """Refuse when an operation on this finding of the host is already queued or running."""
    if Operation.objects.active().filter(host=host, kind__in=FINDING_KINDS,
                                         **{f"arguments__{key}": value}).exists():
        raise PortalError(f"An action on {value} of {host.name} is already under way; "
                          "wait for it.")


def findings_forget(host_id: int, *, domain: str = "", volume: str = "") -> None:
    """Drop a finding acted on from the host's last report, before the next reconcile."""
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host_id)
        host.unknown_domains = [d for d in host.unknown_domains if d != domain]
        host.orphan_volumes = [v for v in host.orphan_volumes if v != volume]
        host.save(update_fields=["unknown_domains", "orphan_volumes"])


def host_datastore_of(host: Host, path: str) -> Datastore | None:
    """Return the host's datastore whose directory holds the file, or None."""
    folder = str(PurePosixPath(path).parent).rstrip("/")
    for ds in Datastore.objects.filter(hosts=host):
        if ds.path.rstrip("/") == folder:
            return ds
    return None


def domain_disks(hv: Hypervisor, name: str) -> list[str]:
    """Return the disk files of one domain, as its definition names them."""
    return parse_domain_xml(hv.domain_xml(name)).disk_paths


def disks_of_other_domains(hv: Hypervisor, but: str) -> dict[str, str]:
    """Return every disk file of the host's other domains, with the domain using it."""
    used: dict[str, str] = {}
    for facts in hv.list_domains():
        if facts.name != but:
            for path in domain_disks(hv, facts.name):
                used.setdefault(path, facts.name)
    return used


@dataclass
class DiskVerdicts:
    """Which disk files of a domain may go, and why each kept one stays."""

    delete: list[tuple[Datastore, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def disk_verdicts(hv: Hypervisor, host: Host, paths: list[str], *, domain: str) -> DiskVerdicts:
    """Sort a domain's disks into those nothing else references and those kept, with why."""
    verdicts = DiskVerdicts()
    others = disks_of_other_domains(hv, but=domain)
    orphans = set(host_orphan_volumes(hv=hv, host=host, in_use=volumes_in_use()))
    for path in paths:
        ds = host_datastore_of(host, path)
        if ds is None:
            verdicts.kept.append(f"{path} (outside the portal's datastores)")
        elif path not in orphans:
            verdicts.kept.append(f"{path} (a VM, disk, seed or template of the portal uses it)")
        elif path in others:
            verdicts.kept.append(f"{path} (used by domain {others[path]})")
        else:
            verdicts.delete.append((ds, PurePosixPath(path).name))
    return verdicts


# ---- asking (web side: database only) ----

def _finding_request(*, host: Host, actor, kind: OperationKind, key: str, value: str,  # noqa: ANN001
                     listed: str, what: str) -> Operation:
    """Ask for an operation on one finding the host's last reconcile listed (in `listed`)."""

    def check(locked: Host) -> None:
        if value not in getattr(locked, listed):
            raise PortalError(f"{value} is not among the orphan {what}s of {locked.name}; "
                              "refresh the page.")
        finding_busy_check(locked, key=key, value=value)

    return operation_request(kind=kind, actor=actor, host=host, arguments={key: value},
                             check=check, doing=f"delete {what}s of")


def orphan_domain_delete_request(*, host: Host, domain: str, actor) -> Operation:  # noqa: ANN001
    """Ask for an orphan domain of the host to be destroyed and undefined."""
    return _finding_request(host=host, actor=actor, kind=OperationKind.DOMAIN_REMOVE,
                            key="domain", value=domain, listed="unknown_domains",
                            what="domain")


def orphan_volume_delete_request(*, host: Host, path: str, actor) -> Operation:  # noqa: ANN001
    """Ask for an orphan volume in one of the host's datastores to be deleted."""
    return _finding_request(host=host, actor=actor, kind=OperationKind.VOLUME_REMOVE,
                            key="volume", value=path, listed="orphan_volumes", what="volume")


# ---- carrying out (worker side) ----

@handles(OperationKind.DOMAIN_REMOVE, target="host", scope=(), permission=MANAGE_HOST)
def orphan_domain_delete(op: Operation) -> str:
    """Destroy and undefine an orphan domain; delete its disks that nothing else references."""
    host = Host.objects.get(pk=op.host_id)
    name = op.arguments["domain"]
    if VirtualMachine.objects.live().filter(name=name).exists():
        raise PortalError(f"A VM named {name} now exists in the portal; its domain was kept.")
    hv = Hypervisor(host.uri)
    if hv.find_domain(name) is None:
        findings_forget(host.pk, domain=name)
        return f"Domain {name} was already gone from {host.name}."
    paths = domain_disks(hv, name)
    operation_progress(op, "Destroying and undefining the domain")
    hv.undefine_domain(name)
    verdicts = disk_verdicts(hv, host, paths, domain=name)
    for ds, volume in verdicts.delete:
        operation_progress(op, f"Deleting {volume}")
        hv.delete_volume(ds.pool_name, volume)
    findings_forget(host.pk, domain=name)
    deleted = ", ".join(str(PurePosixPath(ds.path) / v) for ds, v in verdicts.delete)
    words = [f"Domain {name} destroyed and undefined on {host.name}."]
    words.append(f"Deleted its disks: {deleted}." if deleted else "No disk of it was deleted.")
    if verdicts.kept:
        words.append("Kept: " + "; ".join(verdicts.kept) + ".")
    return " ".join(words)


@handles(OperationKind.VOLUME_REMOVE, target="host", scope=(), permission=MANAGE_HOST)
def orphan_volume_delete(op: Operation) -> str:
    """Delete an orphan volume, once the host confirms nothing references it."""
    host = Host.objects.get(pk=op.host_id)
    path = op.arguments["volume"]
    ds = host_datastore_of(host, path)
    if ds is None:
        raise PortalError(f"{path} is not in a datastore of {host.name}; nothing was deleted.")
    hv = Hypervisor(host.uri)
    volume = PurePosixPath(path).name
    if not hv.volume_exists(ds.pool_name, volume):
        findings_forget(host.pk, volume=path)
        return f"{path} was already gone."
    others = disks_of_other_domains(hv, but="")
    if path in others:
        raise PortalError(f"{path} is the disk of domain {others[path]} on {host.name}; "
                          "it was kept.")
    if path not in host_orphan_volumes(hv=hv, host=host, in_use=volumes_in_use()):
        raise PortalError(f"{path} is now used by a VM, disk, seed or template of the portal; "
                          "it was kept.")
    hv.delete_volume(ds.pool_name, volume)
    findings_forget(host.pk, volume=path)
    return f"Orphan volume {path} deleted from {host.name}."

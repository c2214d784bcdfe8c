"""Writes on hosts: reading their facts, probing them, finding their orphan volumes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import PurePosixPath

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from core.errors import PortalError
from hosts.virt.domain_xml import build_probe_xml
from operations.models import Operation, OperationKind
from operations.registry import handles
from operations.requests import operation_request

from .health import NO_ACCEL_ERROR, host_error_record
from .images import template_image_check
from .models import Datastore, Host, HostStatus, Template, accel_label, cpu_mode_label
from .remote import RemoteError, fetch_host_key
from .virt import Hypervisor, NotFound, ProbeReport, ShapeBuilder, VirtError

logger = logging.getLogger(__name__)


def host_register(*, name: str, uri: str, address: str = "", requested_by=None) -> Host:  # noqa: ANN001
    """Record a host and queue the reading of its CPUs, memory and acceleration."""
    host = Host(name=name, uri=uri, address=address)
    host.full_clean()
    with transaction.atomic():
        host.save()
        operation_request(kind=OperationKind.HOST_REFRESH, host=host, actor=requested_by)
    return host


def host_refresh_request(*, host: Host, requested_by=None) -> Operation:  # noqa: ANN001
    """Queue a refresh (facts, probe, pools) of the host unless one is already waiting."""
    waiting = host.operations.active().filter(kind=OperationKind.HOST_REFRESH).first()
    if waiting is not None:
        return waiting
    return operation_request(kind=OperationKind.HOST_REFRESH, host=host, actor=requested_by)


def host_pins_set(*, host: Host, accel_pin: str, cpu_mode_pin: str, requested_by=None) -> Host:  # noqa: ANN001
    """Pin (or, with blanks, unpin) a host's acceleration and CPU mode and queue a refresh."""
    host.accel_pin, host.cpu_mode_pin = accel_pin.strip(), cpu_mode_pin.strip()
    host.full_clean()
    with transaction.atomic():
        host.save(update_fields=["accel_pin", "cpu_mode_pin"])
        host_refresh_request(host=host, requested_by=requested_by)
    return host


# How long a probe guest booting a template must keep running: long enough to leave the
# bootloader (on some nested hosts KVM runs the firmware but stops the bootloader).
PROBE_BOOT_SETTLE_S = 6.0
PROBE_BOOT_MEMORY_MIB = 256


def _probe_template(hv: Hypervisor, host: Host) -> Template | None:
    """Return the active template whose image the probe boots on the host, if one is there."""
    templates = (Template.objects.filter(is_active=True, datastore__hosts=host)
                 .select_related("datastore").order_by("-cloud_init", "name"))
    for template in templates:
        if not hv.volume_exists(template.datastore.pool_name, template.image):
            continue
        try:
            # The probe boots the image: the same inspection as an install, first.
            template_image_check(template=template, host=host, hv=hv)
        except (PortalError, VirtError) as exc:
            logger.warning("host %s: the probe does not boot %s: %s", host.name, template, exc)
            continue
        return template
    return None


def _probe_shape(template: Template | None) -> ShapeBuilder:
    if template is None:
        return lambda domain_type, cpu_mode: build_probe_xml(domain_type=domain_type,
                                                             cpu_mode=cpu_mode)
    memory = max(template.min_memory_mib, PROBE_BOOT_MEMORY_MIB)
    return lambda domain_type, cpu_mode: build_probe_xml(
        domain_type=domain_type, cpu_mode=cpu_mode, boot_disk=template.image_path,
        memory_mib=memory)


# A refresh only reads the host and makes its pools: it holds nothing (VMs there carry on).
@handles(OperationKind.HOST_REFRESH, target="host", scope=(), permission="hosts.manage_host")
def host_refresh(op: Operation) -> str:
    """Read the host's CPUs and memory, probe how guests run there, make the datastores' pools."""
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
        for ds in Datastore.objects.filter(hosts=host):
            hv.ensure_pool(ds.pool_name, ds.path)
        template = _probe_template(hv, host)
        # Every refresh probes again: a kernel, qemu or firmware update changes the answer.
        report = hv.probe(_probe_shape(template), accel_pin=host.accel_pin,
                          cpu_mode_pin=host.cpu_mode_pin, fresh=True,
                          settle_s=PROBE_BOOT_SETTLE_S if template else None)
        facts = hv.facts()
    except VirtError as exc:
        host_error_record(host_id=host.pk, error=exc)
        raise
    now = timezone.now()
    error = "" if report.accel else NO_ACCEL_ERROR
    Host.objects.filter(pk=host.pk).update(
        vcpus=facts.cpus, memory_mib=facts.memory_mib, accel=report.accel,
        cpu_mode=report.cpu_mode, probed_at=now,
        probe_report={**report.as_dict(), "booted": template.name if template else ""},
        last_seen_at=now, last_error=error,
    )
    if not report.accel:
        raise PortalError(f"{host.name}: no acceleration ran a test guest "
                          f"({_tried(report)}); it takes no VMs until a refresh finds one.")
    pinned = " (pinned)" if report.pinned else ""
    cpu = cpu_mode_label(report.cpu_mode, report.accel)
    return (f"{host.name}: {facts.cpus} CPUs, {facts.memory_mib} MiB, "
            f"{accel_label(report.accel)} acceleration with {cpu}{pinned}, "
            f"libvirt {facts.libvirt_version}.")


def _tried(report: ProbeReport) -> str:
    return "; ".join(f"{a.accel} {a.cpu_mode or 'default CPU'}: {a.reason}"
                     for a in report.attempts) or "nothing could be tried"


def host_orphan_volumes(*, hv: Hypervisor, host: Host, in_use: set[str]) -> list[str]:
    """Return the paths of the volumes in the host's datastores that nothing accounts for.

    `in_use` names the volumes the portal's VMs and disks hold; the datastores' template
    images and the files those volumes back onto are accounted for here.
    """
    orphans: list[str] = []
    for ds in Datastore.objects.filter(hosts=host):
        try:
            names = hv.list_volumes(ds.pool_name)
        except NotFound:
            continue  # the pool is made by the host's next refresh
        except VirtError as exc:
            # e.g. a refresh refused while a volume is being created: keep the last finding.
            logger.warning("host %s: cannot list datastore %s: %s", host.name, ds.name, exc)
            prefix = ds.path.rstrip("/") + "/"
            orphans += [p for p in host.orphan_volumes if p.startswith(prefix)]
            continue
        templates = set(Template.objects.filter(datastore=ds).values_list("image", flat=True))
        unknown = [n for n in names if n not in in_use and n not in templates]
        if unknown:
            backing = _backing_files(hv, ds, [n for n in names if n in in_use])
            unknown = [n for n in unknown if n not in backing]
        orphans += [str(PurePosixPath(ds.path) / n) for n in unknown]
    return sorted(orphans)


def _backing_files(hv: Hypervisor, ds: Datastore, volumes: list[str]) -> set[str]:
    """Return the files of ds that these volumes back onto (an older template image, say)."""
    found = set()
    for name in volumes:
        try:
            backing = hv.inspect_image(ds.pool_name, name).backing_path
        except VirtError:
            continue
        if backing and str(PurePosixPath(backing).parent) == ds.path.rstrip("/"):
            found.add(PurePosixPath(backing).name)
    return found


# ---- status: maintenance and marking up (host page, admins) ----

def _status_change(host: Host, *, allowed: tuple[str, ...], to: str, refusal: str) -> Host:
    """Move the host from one of `allowed` to `to` under its row lock, or raise PortalError."""
    with transaction.atomic():
        row = Host.objects.select_for_update().get(pk=host.pk)
        if row.status not in allowed:
            raise PortalError(refusal.format(host=row.name, status=row.get_status_display()))
        row.status = to
        row.down_reason, row.down_by_check = "", False
        row.save(update_fields=["status", "down_reason", "down_by_check"])
    logger.info("host %s is now %s", row.name, to)
    return row


def host_maintenance_enter(*, host: Host) -> list[str]:
    """Put the host into maintenance; return the VMs still on it (they stay until migrated)."""
    row = _status_change(host, allowed=(HostStatus.UP, HostStatus.DOWN),
                         to=HostStatus.MAINTENANCE, refusal="{host} is in maintenance already.")
    return list(row.vms.live().order_by("name").values_list("name", flat=True))


# How the host's VMs are moved away: the VMs application, which sits above hosts, registers
# it (`vms.services.evacuation.evacuation_request`); it returns the evacuation asked for, or
# None when no VM is left on the host.
_evacuation: Callable[..., Operation | None] | None = None


def host_evacuation_set(request: Callable[..., Operation | None]) -> None:
    """Ask this function for a host's evacuation (maintenance's moves of its VMs)."""
    global _evacuation  # noqa: PLW0603 - set once, from VmsConfig.ready()
    _evacuation = request


def host_evacuate_request(*, host: Host, actor) -> Operation | None:  # noqa: ANN001
    """Ask for the VMs left on a host in maintenance to move to other hosts."""
    if _evacuation is None:
        raise PortalError("The portal cannot move VMs between hosts here; nothing was asked.")
    return _evacuation(host=host, actor=actor)


def host_evacuation_last(host: Host) -> Operation | None:
    """Return the host's evacuation under way or its last one, with its children."""
    children = Operation.objects.select_related("vm", "host").order_by("pk")
    return (host.operations.filter(kind=OperationKind.EVACUATE)
            .prefetch_related(Prefetch("children", queryset=children)).first())


def host_evacuation_rows(evacuation: Operation | None) -> list[dict]:
    """Return the evacuation's rows for the host page: each move begun (its child operation),
    each one planned and waiting, and each VM that stays with its reason."""
    if evacuation is None:
        return []
    children = list(evacuation.children.all())
    begun = {child.vm_id for child in children}
    rows = [{"name": child.vm.name if child.vm else "", "vm_id": child.vm_id,
             "to": child.host.name if child.host else "", "op": child} for child in children]
    plan = evacuation.arguments.get("plan", [])
    rows += [{"name": move["name"], "vm_id": move["vm"], "to": move["to"], "waiting": True}
             for move in plan if move["vm"] not in begun]
    rows += [{"name": stay["name"], "vm_id": stay["vm"], "to": "", "why": stay["why"]}
             for stay in evacuation.arguments.get("stays", [])]
    return rows


def host_maintenance_leave(*, host: Host) -> Host:
    """Take the host out of maintenance: it is up and takes new VMs again."""
    return _status_change(host, allowed=(HostStatus.MAINTENANCE,), to=HostStatus.UP,
                          refusal="{host} is not in maintenance ({status}).")


def host_mark_up(*, host: Host) -> Host:
    """Mark a down host up again, once its last health check passed."""
    if host.health_state != "ok":
        raise PortalError(f"{host.name} did not pass its last health check; mark it up once "
                          "a check passes (or put it into maintenance).")
    return _status_change(host, allowed=(HostStatus.DOWN,), to=HostStatus.UP,
                          refusal="{host} is not down ({status}).")

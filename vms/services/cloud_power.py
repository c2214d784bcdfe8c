"""Whole-cloud shutdown and bootup: save every running VM, power the hosts off; and back.

A shutdown (`CLOUD_SHUTDOWN`) first records, host by host, exactly the VMs running or
suspended (`CloudShutdownVM`), then saves each one (an internal snapshot of the host's own,
not a user's snapshot, then a force off) and powers its host off through its power method;
a host with none is left on and the message says so. The bootup (`CLOUD_BOOTUP`) powers the
hosts on, waits for each to pass its health check, reverts exactly the recorded VMs to their
snapshot (they run on from where they were) and removes the snapshots.

Every step moves a row of the record one stage on, after the host did it, and every host
step is safe to repeat: asked again after an interruption, either continues from the record,
never snapshots a VM twice, and never resumes a VM that was not running.

While a shutdown is open (from the request until its bootup finished) the portal refuses
every operation on a VM and every host-holding operation (`cloud_request_guard`); a VM's
operation already under way when the shutdown was asked for is waited for before its VM is
touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.errors import PortalError
from hosts.health_check import host_health_check
from hosts.models import Host, HostStatus, PowerMethod
from hosts.power import ipmi_run, ssh_poweroff, wol_send
from hosts.virt import Hypervisor, power_state
from operations.models import Operation, OperationKind
from operations.registry import handles, spec_for
from operations.requests import operation_create, operation_request, operation_scope_busy
from operations.runner import operation_progress

from ..models import (
    CloudHostStage,
    CloudShutdown,
    CloudShutdownHost,
    CloudShutdownVM,
    CloudVMStage,
    VirtualMachine,
    VMState,
)
from .domain import vm_observe

MANAGE = "hosts.manage_host"
CLOUD_KINDS = (OperationKind.CLOUD_SHUTDOWN, OperationKind.CLOUD_BOOTUP)
# The hosts a shutdown acts on: a down host is not reached (its VMs are not running).
ACTED_HOST_STATES = (HostStatus.UP, HostStatus.MAINTENANCE)
SAVED_STATES = (VMState.RUNNING, VMState.PAUSED)
SNAPSHOT_WORDS = "Taken by the whole-cloud shutdown; removed when the cloud boots up."


def _setting(name: str, default: float) -> float:
    return float(settings.PORTAL.get(name, default))


class _OutOfTime(Exception):  # noqa: N818 - not an error: the next part takes over
    """This run nears the workers' time limit: it stops here and queues the next part."""


def _budget_check() -> None:
    """Stop the run well before the workers' time limit (`_next_part` continues it)."""
    if time.monotonic() > _BUDGET["until"]:
        raise _OutOfTime


_BUDGET = {"until": float("inf")}


def _budget_start() -> None:
    margin = _setting("CLOUD_TIME_MARGIN", 180)
    _BUDGET["until"] = time.monotonic() + max(settings.OPERATION_TIMEOUT - margin, 30)


def _next_part(op: Operation) -> str:
    """Queue the same kind again on the same record: it continues where this run stopped."""
    part = int(op.arguments.get("part", 1)) + 1
    nxt = operation_create(kind=op.kind, requested_by=op.requested_by,
                           arguments={**op.arguments, "part": part})
    return (f"Stopped before the workers' time limit; part {part} (operation {nxt.pk}) "
            "continues from here.")


def cloud_hosts_now() -> list[Host]:
    """Return the hosts a shutdown would act on, each with how many of its VMs it would save."""
    return list(Host.objects.filter(status__in=ACTED_HOST_STATES).annotate(
        running=Count("vms", filter=Q(vms__state__in=SAVED_STATES))).order_by("name"))


def cloud_shutdown_open() -> CloudShutdown | None:
    """Return the shutdown not yet ended by a bootup, or None when the cloud is up."""
    return CloudShutdown.objects.filter(finished_at__isnull=True).first()


def cloud_operation_active() -> Operation | None:
    """Return the shutdown or bootup under way, or None."""
    return Operation.objects.active().filter(kind__in=CLOUD_KINDS).first()


def _since(record: CloudShutdown) -> str:
    return f"{timezone.localtime(record.started_at):%Y-%m-%d %H:%M}"


def cloud_shut_words(record: CloudShutdown) -> str:
    """Return what a refused user reads while the cloud is shut down."""
    return (f"The cloud is shut down for maintenance since {_since(record)}; an "
            "administrator will start it again.")


def cloud_request_guard(kind: str, vm: object, host: object,
                        parent: Operation | None = None) -> str | None:
    """Refuse operations on VMs and host-holding ones while a shutdown is open (the registry's
    request guard); the cloud's own kinds and host reads (refresh, health check) pass."""
    if kind in CLOUD_KINDS:
        return None
    if vm is None:
        spec = spec_for(kind)
        if host is None or spec is None or "host" not in spec.scope:
            return None
    record = cloud_shutdown_open()
    return cloud_shut_words(record) if record is not None else None


# ---- requests ----

def _request(kind: OperationKind, actor, record_for: Callable[[], CloudShutdown],  # noqa: ANN001
             doing: str) -> Operation:
    if not actor.has_perm(MANAGE):
        raise PortalError(f"You may not {doing} the cloud.")
    try:
        with transaction.atomic():
            under_way = Operation.objects.select_for_update().active().filter(
                kind__in=CLOUD_KINDS).first()
            if under_way is not None:
                raise PortalError(f"{under_way.get_kind_display()} is under way; wait for it.")
            record = record_for()
            return operation_request(kind=kind, actor=actor, doing=doing, arguments={
                "shutdown": record.pk, "since": timezone.now().isoformat()})
    except IntegrityError as exc:
        raise PortalError("Another administrator has just asked the same; see below.") from exc


def cloud_shutdown_request(*, actor) -> Operation:  # noqa: ANN001
    """Queue the whole-cloud shutdown; asked again, it continues the open one."""

    def record_for() -> CloudShutdown:
        record = CloudShutdown.objects.select_for_update().filter(
            finished_at__isnull=True).first()
        if record is None:
            return CloudShutdown.objects.create(requested_by=actor)
        if record.bootup_started_at is not None:
            raise PortalError("The cloud's bootup has begun; ask for the bootup again to "
                              "finish it before shutting the cloud down again.")
        return record

    return _request(OperationKind.CLOUD_SHUTDOWN, actor, record_for, "shut down")


def cloud_bootup_request(*, actor) -> Operation:  # noqa: ANN001
    """Queue the bootup of the open shutdown; asked again, it continues it."""

    def record_for() -> CloudShutdown:
        record = CloudShutdown.objects.select_for_update().filter(
            finished_at__isnull=True).first()
        if record is None:
            raise PortalError("The cloud is not shut down; there is nothing to boot up.")
        if record.bootup_started_at is None:
            CloudShutdown.objects.filter(pk=record.pk).update(bootup_started_at=timezone.now())
        return record

    return _request(OperationKind.CLOUD_BOOTUP, actor, record_for, "boot up")


# ---- shutdown ----

def _record(op: Operation) -> CloudShutdown:
    return CloudShutdown.objects.get(pk=op.arguments["shutdown"])


def _list_running(op: Operation, record: CloudShutdown) -> None:
    """Record every acted host and, on each, exactly the VMs running or suspended now."""
    for host in Host.objects.filter(status__in=ACTED_HOST_STATES).order_by("name"):
        CloudShutdownHost.objects.get_or_create(shutdown=record, host=host,
                                                defaults={"prior_status": host.status})
        # In maintenance from now on: nothing is placed there, no check marks it down.
        Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE)
    for row in record.hosts.select_related("host"):
        operation_progress(op, f"Listing the running VMs of {row.host.name}")
        hv = Hypervisor(row.host.uri)
        for vm in VirtualMachine.objects.live().filter(host=row.host):
            facts = hv.find_domain(vm.domain_name)
            state = power_state(facts.state if facts else None)
            if state in SAVED_STATES:
                CloudShutdownVM.objects.get_or_create(
                    shutdown=record, vm=vm, defaults={
                        "host": row.host, "prior_state": state,
                        "snapshot_name": record.snapshot_name})
    CloudShutdown.objects.filter(pk=record.pk).update(listed_at=timezone.now())


def _wait_free(op: Operation, vm: VirtualMachine) -> None:
    """Wait for the VM's operations under way when the shutdown was asked for to end."""
    limit = time.monotonic() + _setting("CLOUD_VM_WAIT", 300)
    while operation_scope_busy(vm=vm):
        _budget_check()
        if time.monotonic() > limit:
            raise PortalError(f"{vm.name} is still busy with another operation; ask for the "
                              "shutdown again once it has finished (what is saved stays "
                              "saved).")
        operation_progress(op, f"Waiting for the operation under way on {vm.name}")
        time.sleep(_setting("CLOUD_POLL", 2))


def _save(op: Operation, row: CloudShutdownVM) -> None:
    """Snapshot the VM's domain (once: an existing snapshot is kept) and force it off."""
    vm = row.vm
    _budget_check()
    _wait_free(op, vm)
    hv = Hypervisor(row.host.uri)
    facts = hv.find_domain(vm.domain_name)
    if facts is None or power_state(facts.state) not in SAVED_STATES:
        # Off already: saved by an earlier run, or the guest powered itself off since.
        have = facts is not None and row.snapshot_name in hv.snapshot_names(vm.domain_name)
        row.stage = CloudVMStage.SAVED if have else CloudVMStage.SKIPPED
        row.note = "" if have else "It stopped by itself before it was saved; not resumed."
    else:
        operation_progress(op, f"Saving {vm.name} on {row.host.name}")
        hv.snapshot_create(vm.domain_name, row.snapshot_name, SNAPSHOT_WORDS)
        facts = hv.destroy(vm.domain_name)
        row.stage = CloudVMStage.SAVED
    row.save(update_fields=["stage", "note"])
    vm_observe(vm, facts)


def _power_off(row: CloudShutdownHost) -> None:
    """Power the host off through its method; a host without one is left on, in words."""
    host = row.host
    method = host.power_method
    if method == PowerMethod.IPMI:
        said = ipmi_run(host, "off")
    elif method == PowerMethod.SSH or (method == PowerMethod.WOL and host.ssh_power_off):
        said = ssh_poweroff(host)
    else:
        row.stage = CloudHostStage.LEFT_ON
        row.note = ("No power method is set: left on." if method in ("", PowerMethod.NONE)
                    else "Wake-on-LAN cannot power it off: left on.")
        row.save(update_fields=["stage", "note"])
        return
    row.stage, row.note = CloudHostStage.OFF, f"Powered off ({said})"[:300]
    row.save(update_fields=["stage", "note"])


def _shutdown_words(record: CloudShutdown) -> str:
    saved = record.vms.filter(stage=CloudVMStage.SAVED).count()
    off = [r.host.name for r in record.hosts.filter(stage=CloudHostStage.OFF)]
    left = [r.host.name for r in record.hosts.filter(stage=CloudHostStage.LEFT_ON)]
    words = f"The cloud is shut down: {saved} VM(s) saved."
    if off:
        words += f" Powered off: {', '.join(off)}."
    if left:
        words += (f" Left on, with no way to power them off from the portal: "
                  f"{', '.join(left)}.")
    return words + " Boot the cloud up from its page to resume the saved VMs."


@handles(OperationKind.CLOUD_SHUTDOWN, target="cloud", scope=(), permission=MANAGE)
def cloud_shutdown_run(op: Operation) -> str:
    """Record the running VMs, save each, power its host off; continue from the record."""
    record = _record(op)
    if record.bootup_started_at is not None or record.finished_at is not None:
        raise PortalError("The cloud's bootup has begun; this shutdown is over.")
    _budget_start()
    try:
        return _shutdown(op, record)
    except _OutOfTime:
        return _next_part(op)


def _shutdown(op: Operation, record: CloudShutdown) -> str:
    if record.listed_at is None:
        _list_running(op, record)
    for hrow in record.hosts.select_related("host").filter(stage=CloudHostStage.LISTED):
        for row in record.vms.select_related("vm", "host").filter(
                host=hrow.host, stage=CloudVMStage.LISTED):
            _save(op, row)
        _budget_check()
        operation_progress(op, f"Powering off {hrow.host.name}")
        _power_off(hrow)
    if record.shut_down_at is None:
        CloudShutdown.objects.filter(pk=record.pk).update(shut_down_at=timezone.now())
    return _shutdown_words(record)


# ---- bootup ----

def _power_on(row: CloudShutdownHost) -> None:
    host = row.host
    if host.power_method == PowerMethod.IPMI:
        said = ipmi_run(host, "on")
    elif host.power_method == PowerMethod.WOL:
        said = wol_send(host)
    else:
        raise PortalError(f"The portal cannot power {host.name} on: power it on by hand, "
                          "then ask for the bootup again.")
    row.note = f"Power on asked ({said})"[:300]
    row.save(update_fields=["note"])


def _healthy(op: Operation, host: Host) -> str | None:
    """Check the host until it passes its health check (None) or the wait is over (why not).

    The wait counts from when this bootup was asked for, across its parts.
    """
    since = datetime.fromisoformat(op.arguments["since"]) if op.arguments.get(
        "since") else op.created_at
    limit = since + timedelta(seconds=_setting("CLOUD_BOOT_WAIT", 600))
    while True:
        host = host_health_check(host)
        if host.health_state == "ok":
            return None
        if timezone.now() > limit:
            failed = [f"{r['label']}: {r['detail']}" for r in host.health_rows if not r["ok"]]
            return f"{host.name} ({'; '.join(failed) or 'not checked'})"
        _budget_check()
        operation_progress(op, f"Waiting for {host.name} to pass its health check")
        time.sleep(_setting("CLOUD_POLL", 2))


def _resume(op: Operation, row: CloudShutdownVM) -> None:
    """Revert the VM to its shutdown snapshot (once), then remove the snapshot."""
    vm = VirtualMachine.objects.get(pk=row.vm_id)
    if vm.state == VMState.DELETED or vm.host_id != row.host_id:
        row.stage, row.note = CloudVMStage.SKIPPED, "Deleted or moved meanwhile; not resumed."
        row.save(update_fields=["stage", "note"])
        return
    hv = Hypervisor(row.host.uri)
    name = vm.domain_name
    if row.stage in (CloudVMStage.LISTED, CloudVMStage.SAVED):
        operation_progress(op, f"Resuming {vm.name} on {row.host.name}")
        facts = hv.find_domain(name)
        if facts is None:
            row.stage, row.note = CloudVMStage.SKIPPED, "Its domain is gone from the host."
            row.save(update_fields=["stage", "note"])
            return
        if power_state(facts.state) not in SAVED_STATES:
            if row.snapshot_name in hv.snapshot_names(name):
                hv.snapshot_revert(name, row.snapshot_name)
            else:
                hv.start(name)
                row.note = "Its saved state was missing: started afresh."
        row.stage = CloudVMStage.RESUMED
        row.save(update_fields=["stage", "note"])
    hv.snapshot_delete(name, row.snapshot_name)
    row.stage = CloudVMStage.DONE
    row.save(update_fields=["stage"])
    vm_observe(vm, hv.find_domain(name))


@handles(OperationKind.CLOUD_BOOTUP, target="cloud", scope=(), permission=MANAGE)
def cloud_bootup_run(op: Operation) -> str:
    """Power the hosts on, wait for their health, resume exactly the recorded VMs."""
    record = _record(op)
    _budget_start()
    try:
        return _bootup(op, record)
    except _OutOfTime:
        return _next_part(op)


def _bootup(op: Operation, record: CloudShutdown) -> str:
    waiting: list[str] = []
    for hrow in record.hosts.select_related("host").exclude(stage=CloudHostStage.UP):
        host = hrow.host
        if hrow.stage == CloudHostStage.OFF:
            operation_progress(op, f"Powering on {host.name}")
            _power_on(hrow)
        why = _healthy(op, host)
        if why:
            waiting.append(why)
            continue
        Host.objects.filter(pk=host.pk).update(status=hrow.prior_status)
        for row in record.vms.select_related("host").filter(host=host).exclude(
                stage__in=(CloudVMStage.DONE, CloudVMStage.SKIPPED)):
            _budget_check()
            _resume(op, row)
        hrow.stage = CloudHostStage.UP
        hrow.save(update_fields=["stage"])
    if waiting:
        raise PortalError("Not back in time, their VMs wait: " + "; ".join(waiting) + ". "
                          "Ask for the bootup again once they pass their health check (the "
                          "other hosts' VMs are resumed).")
    CloudShutdown.objects.filter(pk=record.pk).update(finished_at=timezone.now())
    resumed = record.vms.filter(stage=CloudVMStage.DONE).count()
    skipped = record.vms.filter(stage=CloudVMStage.SKIPPED).count()
    words = f"The cloud is up: {resumed} VM(s) resumed from where they were."
    if skipped:
        words += f" {skipped} not resumed (see the cloud page)."
    return words

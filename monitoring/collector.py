"""Collection of host and VM utilisation: one bulk libvirt call per host per cycle."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from hosts.health import host_error_record, host_reached
from hosts.models import Host
from hosts.remote import RemoteError, RemoteHost, run
from hosts.virt import DomainSample, HostSample, Hypervisor, VirtError
from vms.models import VirtualMachine, VMState

from .models import LastSample
from .rates import HostIO, host_metrics, parse_proc_diskstats, parse_proc_net_dev, vm_metrics
from .rrd import RRDStore

logger = logging.getLogger(__name__)


def rrd_store() -> RRDStore:
    """Return the RRD store the settings describe."""
    conf = settings.PORTAL_MONITOR
    return RRDStore(conf["RRD_DIR"], step=conf["PERIOD"],
                    daemon=conf["RRDCACHED_ADDRESS"] or None)


def host_cpu_load_latest(host: Host) -> float | None:
    """Return the host's CPU load (percent) at its last sample, or None."""
    return rrd_store().latest("host", host_key(host)).get("cpu")


def vm_key(vm: VirtualMachine) -> str:
    """Return the RRD key of a VM: its UUID, never its (user-chosen) name."""
    return vm.uuid.hex


def host_key(host: Host) -> str:
    """Return the RRD key of a host."""
    return str(host.pk)


def _host_io(host: Host) -> HostIO | None:
    """Read the host's disk and network counters: the part libvirt cannot give."""
    try:
        if host.address:
            remote = RemoteHost(address=host.address, host_key=host.ssh_host_key,
                                key_filename=settings.PORTAL_MONITOR["SSH_KEY_FILE"] or None)
            disks = run(remote, ["cat", "/proc/diskstats"]).stdout
            nets = run(remote, ["cat", "/proc/net/dev"]).stdout
        elif host.uri.startswith("qemu:///"):
            disks = Path("/proc/diskstats").read_text()
            nets = Path("/proc/net/dev").read_text()
        else:
            return None
    except (RemoteError, OSError, ValueError) as exc:
        logger.warning("host %s: no disk and network counters: %s", host.name, exc)
        return None
    rd, wr = parse_proc_diskstats(disks)
    rx, tx = parse_proc_net_dev(nets)
    return HostIO(disk_read_bytes=rd, disk_write_bytes=wr, net_rx_bytes=rx, net_tx_bytes=tx)


def host_collect(*, host: Host, now: float | None = None) -> dict[str, int]:
    """Sample the host and all its domains once and add the rates to their RRD files."""
    now = time.time() if now is None else now
    hv = Hypervisor(host.uri)
    try:
        domains = hv.domain_samples()
        node = hv.host_sample()
    except VirtError as exc:
        host_error_record(host_id=host.pk, error=exc)
        raise
    host_reached(host_id=host.pk)
    io = _host_io(host)
    vms = {vm.domain_name: vm for vm in VirtualMachine.objects.filter(host=host)
           .exclude(state=VMState.DELETED)}
    last = {row.key: row for row in LastSample.objects.filter(host=host)}
    batch: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    keep: list[LastSample] = []

    for sample in domains:
        vm = vms.get(sample.name)
        if vm is None or sample.uuid != str(vm.uuid):
            continue  # not ours: the reconciler reports it
        key = f"vm:{vm_key(vm)}"
        prev_row = last.get(key)
        prev = DomainSample(**prev_row.data) if prev_row else None
        metrics = vm_metrics(prev, prev_row.at if prev_row else None, sample, now)
        batch[("vm", vm_key(vm))] = [(int(now), metrics)]
        keep.append(LastSample(key=key, host=host, data=dataclasses.asdict(sample), at=now))

    key = f"host:{host_key(host)}"
    prev_row = last.get(key)
    prev_node = HostSample(**prev_row.data["node"]) if prev_row else None
    prev_io = (HostIO(**prev_row.data["io"]) if prev_row and prev_row.data.get("io")
               else None)
    batch[("host", host_key(host))] = [(int(now), host_metrics(
        prev_node, prev_row.at if prev_row else None, node, now, prev_io, io))]
    keep.append(LastSample(key=key, host=host, at=now, data={
        "node": dataclasses.asdict(node), "io": dataclasses.asdict(io) if io else None}))

    rrd_store().update_many(batch)
    with transaction.atomic():
        LastSample.objects.bulk_create(keep, update_conflicts=True, unique_fields=["key"],
                                       update_fields=["data", "at", "host"])
        stale = set(last) - {row.key for row in keep}
        if stale:
            LastSample.objects.filter(key__in=stale).delete()
    return {"domains": len(domains), "vms": len(batch) - 1}


def vm_history_archive(*, vm: VirtualMachine) -> None:
    """Archive a deleted VM's RRD file and forget its last counters."""
    rrd_store().archive("vm", vm_key(vm))
    LastSample.objects.filter(key=f"vm:{vm_key(vm)}").delete()


def vm_deleted_archive(sender: type, *, vm: VirtualMachine, **kwargs: object) -> None:
    """Archive a VM's usage history when it is deleted (receiver of `vms.signals.vm_deleted`)."""
    try:
        vm_history_archive(vm=vm)
    except OSError:  # the VM is gone either way; a stray RRD file is only history
        logger.exception("could not archive the usage history of %s", vm.name)

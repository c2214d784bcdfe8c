"""Utilisation counters of domains and hosts: read from libvirt and parsed.

Counters are cumulative (nanoseconds of CPU, bytes read or sent since the domain started);
rates come from the difference of two samples, in monitoring.rates. A value libvirt did not
report is None, never 0, so a missing counter can never pass for an idle one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import libvirt

from .base import DOMAIN_STATES, UNSUPPORTED_CODES, HypervisorBase, error_code, translate

KIB = 1024


@dataclass(frozen=True)
class DomainSample:
    """The counters of one domain at one moment."""

    name: str
    uuid: str
    state: str  # see hosts.virt.base.DOMAIN_STATES
    vcpus: int | None
    cpu_time_ns: int | None
    memory_bytes: int | None  # memory the guest has (the balloon's current size)
    memory_used_bytes: int | None  # the qemu process's RSS, else balloon current - unused
    disk_read_bytes: int | None  # summed over every disk
    disk_write_bytes: int | None
    net_rx_bytes: int | None  # summed over every interface
    net_tx_bytes: int | None


@dataclass(frozen=True)
class HostSample:
    """The CPU and memory counters of one host at one moment."""

    cpus: int
    cpu_busy_ns: int | None  # kernel + user time over all CPUs
    cpu_total_ns: int | None  # kernel + user + idle + iowait time over all CPUs
    memory_total_bytes: int | None
    memory_free_bytes: int | None  # free + buffers + cached


def _int(value: Any) -> int | None:
    """Return value as an int, or None when it is missing or not a number."""
    # type() rather than isinstance(): True is not a count, and this runs per domain per cycle.
    kind = type(value)
    if kind is int:
        return value
    return int(value) if kind is float else None


def _kib(value: Any) -> int | None:
    number = _int(value)
    return None if number is None else number * KIB


def _used_bytes(rss_kib: Any, current_kib: Any, unused_kib: Any) -> int | None:
    """Return the memory in use: the RSS when known, else what the guest does not leave unused."""
    rss = _kib(rss_kib)
    if rss is not None:
        return rss
    current, unused = _kib(current_kib), _kib(unused_kib)
    if current is None or unused is None:
        return None
    return max(current - unused, 0)


@lru_cache(maxsize=256)
def _device_keys(group: str, count: int, counter: str) -> tuple[str, ...]:
    """Return the record keys `<group>.<n>.<counter>` of count devices."""
    return tuple(f"{group}.{index}.{counter}" for index in range(count))


def _device_sum(
    record: Mapping[str, Any], group: str, count: int | None, counter: str
) -> int | None:
    """Sum `<group>.<n>.<counter>` over count devices; None if any device lacks it."""
    # All or nothing: a device may lack its counter (qemu could not read it at once under
    # NOWAIT). A partial sum would drop for one sample and then jump back, which the next
    # rate would take for a burst of traffic.
    if count is None or count < 0:
        return None
    total = 0
    for key in _device_keys(group, count, counter):
        value = _int(record.get(key))
        if value is None:
            return None
        total += value
    return total


def domain_sample_from_record(
    name: str, uuid: str, record: Mapping[str, Any], state_names: Mapping[int, str]
) -> DomainSample:
    """Build a sample from one getAllDomainStats record; an absent field gives None."""
    # This runs for every domain of every host each cycle: one lookup per key, no copies.
    get = record.get
    code = _int(get("state.state"))
    state = "nostate" if code is None else state_names.get(code, "nostate")
    vcpus, current = _int(get("vcpu.current")), get("balloon.current")
    if state == "shutoff":
        # libvirt 9.0 reports a shut-off qemu domain's cpu.time as libvirtd's own CPU time
        # (it reads /proc of pid 0); a shut-off domain uses nothing, so it has no counters.
        return DomainSample(
            name=name, uuid=uuid, state=state, vcpus=vcpus, cpu_time_ns=None,
            memory_bytes=_kib(current), memory_used_bytes=None, disk_read_bytes=None,
            disk_write_bytes=None, net_rx_bytes=None, net_tx_bytes=None,
        )
    disks, nics = _int(get("block.count")), _int(get("net.count"))
    return DomainSample(
        name=name,
        uuid=uuid,
        state=state,
        vcpus=vcpus,
        cpu_time_ns=_int(get("cpu.time")),
        memory_bytes=_kib(current),
        memory_used_bytes=_used_bytes(get("balloon.rss"), current, get("balloon.unused")),
        disk_read_bytes=_device_sum(record, "block", disks, "rd.bytes"),
        disk_write_bytes=_device_sum(record, "block", disks, "wr.bytes"),
        net_rx_bytes=_device_sum(record, "net", nics, "rx.bytes"),
        net_tx_bytes=_device_sum(record, "net", nics, "tx.bytes"),
    )


def _column_sum(rows: Sequence[Sequence[int] | None] | None, column: int) -> int | None:
    """Sum one column of per-device stats tuples; None when any device is unknown."""
    if rows is None:
        return None
    total = 0
    for row in rows:
        if row is None or len(row) <= column:
            return None
        value = _int(row[column])
        # blockStats answers -1 for a counter the driver does not keep.
        if value is None or value < 0:
            return None
        total += value
    return total


def domain_sample_from_calls(
    name: str,
    uuid: str,
    state: str,
    info: Sequence[int] | None,
    memory: Mapping[str, int] | None,
    blocks: Sequence[Sequence[int] | None] | None,
    interfaces: Sequence[Sequence[int] | None] | None,
) -> DomainSample:
    """Build a sample from the per-domain calls: info(), memoryStats(), blockStats(), ..."""
    if state == "shutoff":
        info = info[:4] if info is not None else None  # no cpu time, like the bulk record
        memory, blocks, interfaces = None, None, None
    memory = memory or {}
    current = memory.get("actual")
    if current is None and info is not None:
        current = info[2]
    return DomainSample(
        name=name,
        uuid=uuid,
        state=state,
        vcpus=_int(info[3]) if info is not None else None,
        cpu_time_ns=_int(info[4]) if info is not None and len(info) > 4 else None,
        memory_bytes=_kib(current),
        memory_used_bytes=_used_bytes(memory.get("rss"), memory.get("actual"),
                                      memory.get("unused")),
        # blockStats: (rd_req, rd_bytes, wr_req, wr_bytes, errs)
        disk_read_bytes=_column_sum(blocks, 1),
        disk_write_bytes=_column_sum(blocks, 3),
        # interfaceStats: (rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, ...)
        net_rx_bytes=_column_sum(interfaces, 0),
        net_tx_bytes=_column_sum(interfaces, 4),
    )


def host_sample_from_stats(
    cpus: int, cpu: Mapping[str, int] | None, memory: Mapping[str, int] | None
) -> HostSample:
    """Build a host sample from getCPUStats and getMemoryStats over all CPUs and cells."""
    busy = total = None
    if cpu is not None:
        kernel, user = _int(cpu.get("kernel")), _int(cpu.get("user"))
        idle, iowait = _int(cpu.get("idle")), _int(cpu.get("iowait"))
        if kernel is not None and user is not None:
            busy = kernel + user
            if idle is not None:
                total = busy + idle + (iowait or 0)
    mem_total = mem_free = None
    if memory is not None:
        mem_total = _kib(memory.get("total"))
        free = _kib(memory.get("free"))
        if free is not None:
            mem_free = free + (_kib(memory.get("buffers")) or 0) + (_kib(memory.get("cached")) or 0)
    return HostSample(
        cpus=cpus,
        cpu_busy_ns=busy,
        cpu_total_ns=total,
        memory_total_bytes=mem_total,
        memory_free_bytes=mem_free,
    )


def device_targets(domain_xml: str) -> tuple[list[str], list[str]]:
    """Return the target names of the domain's disks and interfaces, in XML order."""
    # The XML comes from libvirt itself; ElementTree fetches no external entities.
    devices = ET.fromstring(domain_xml).find("devices")  # noqa: S314
    if devices is None:
        return [], []

    def targets(tag: str) -> list[str]:
        found = (dev.find("target") for dev in devices.findall(tag))
        return [t.get("dev", "") for t in found if t is not None and t.get("dev")]

    return targets("disk"), targets("interface")


class Stats(HypervisorBase):
    """The counters of one host and its domains, read for the monitoring collector."""

    _DOMAIN_STATS = (
        libvirt.VIR_DOMAIN_STATS_STATE
        | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
        | libvirt.VIR_DOMAIN_STATS_BALLOON
        | libvirt.VIR_DOMAIN_STATS_VCPU
        | libvirt.VIR_DOMAIN_STATS_INTERFACE
        | libvirt.VIR_DOMAIN_STATS_BLOCK
    )

    def domain_samples(self) -> list[DomainSample]:
        """Return the counters of every domain, active or not, from one bulk call, by name."""
        conn = self._conn()
        # No domain filter: inactive domains come back too, with their state and little else.
        # NOWAIT: a domain busy with a job (migration, snapshot) answers what it can at once
        # instead of holding up the whole host's cycle for the job's duration.
        with self._doing("read stats of", "domains"):
            records = conn.getAllDomainStats(
                self._DOMAIN_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
            )
        # name() and UUIDString() read the handle itself: no call to libvirtd per domain.
        samples = [
            domain_sample_from_record(dom.name(), dom.UUIDString(), record, DOMAIN_STATES)
            for dom, record in records
        ]
        return sorted(samples, key=lambda s: s.name)

    def domain_samples_loop(self) -> list[DomainSample]:
        """Return the same counters with calls per domain: the baseline of bench/collection.py."""
        doms = self._all_domains()
        samples = []
        for dom in doms:
            info = self._quietly(dom.info)
            state = DOMAIN_STATES.get(info[0], "nostate") if info is not None else "nostate"
            memory = blocks = interfaces = None
            if state != "shutoff":
                memory = self._quietly(dom.memoryStats)
                xml = self._quietly(dom.XMLDesc, 0)
                if xml is not None:
                    disks, nics = device_targets(xml)
                    blocks = [self._quietly(dom.blockStats, dev) for dev in disks]
                    interfaces = [self._quietly(dom.interfaceStats, dev) for dev in nics]
            samples.append(domain_sample_from_calls(
                dom.name(), dom.UUIDString(), state, info, memory, blocks, interfaces
            ))
        return sorted(samples, key=lambda s: s.name)


    def host_sample(self) -> HostSample:
        """Return the host's CPU time and memory counters; what the driver lacks is None."""
        conn = self._conn()
        with self._doing("read stats of", "host"):
            cpus = conn.getInfo()[2]
        cpu = self._host_stats(conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, "CPU")
        memory = self._host_stats(
            conn.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, "memory"
        )
        return host_sample_from_stats(cpus, cpu, memory)

    def _host_stats(
        self, call: Callable[[int, int], dict[str, int]], which: int, what: str
    ) -> dict[str, int] | None:
        """Return a node stats dict, or None when the driver does not keep it."""
        try:
            return call(which, 0)
        except libvirt.libvirtError as exc:
            if error_code(exc) in UNSUPPORTED_CODES:
                return None
            raise translate(exc, f"cannot read {what} stats of host on {self.uri}") from exc

"""CPU percentages and per-second rates from the counters of two samples.

Pure functions: no Django, no libvirt. A rate that cannot be known is None, never 0: the
first sample of a VM, a counter that went backwards (a restart, a replaced domain, a wrapped
counter) and a missing counter all give None, which RRD stores as unknown instead of a
misleading zero or a spike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # hosts.virt imports libvirt; this module only reads the samples' fields.
    from hosts.virt import DomainSample, HostSample

METRICS = ("cpu", "memory", "disk_read", "disk_write", "net_rx", "net_tx")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size

# Devices that are not whole physical disks, or that sit on top of disks already counted.
DISK_SKIP_PREFIXES = ("loop", "ram", "dm-", "zram", "sr", "md")
# Loopback, and interfaces of guests, containers and their bridges (their traffic also
# crosses a physical interface, or never leaves the host).
NET_SKIP_NAMES = ("lo",)
NET_SKIP_PREFIXES = ("vnet", "virbr", "veth", "tap", "docker", "br-", "macvtap")


@dataclass(frozen=True)
class HostIO:
    """A host's disk and network byte counters, read from /proc."""

    disk_read_bytes: int | None
    disk_write_bytes: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None


def _interval(seconds: float) -> bool:
    """Return whether seconds is a usable, positive interval."""
    return isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0


def _increase(prev: int | None, cur: int | None) -> int | None:
    """Return how much a counter grew; None when either is unknown or it went back."""
    if prev is None or cur is None or cur < prev:
        return None
    return cur - prev


def rate(prev: int | None, cur: int | None, seconds: float) -> float | None:
    """Return the per-second increase of a counter; None when it is unknown or went back."""
    grown = _increase(prev, cur)
    if grown is None or not _interval(seconds):
        return None
    return grown / seconds


def cpu_percent(
    prev_ns: int | None, cur_ns: int | None, seconds: float, vcpus: int | None
) -> float | None:
    """Return the CPU use in percent of all the domain's vCPUs, clamped to 0..100."""
    if not vcpus or vcpus < 0:
        return None
    per_second = rate(prev_ns, cur_ns, seconds)
    if per_second is None:
        return None
    return min(max(100.0 * per_second / (1e9 * vcpus), 0.0), 100.0)


def _elapsed(prev_at: float | None, cur_at: float) -> float:
    return 0.0 if prev_at is None else cur_at - prev_at


def vm_metrics(
    prev: DomainSample | None, prev_at: float | None, cur: DomainSample, cur_at: float
) -> dict[str, float | None]:
    """Return the VM's CPU %, memory in use and disk and network rates since prev."""
    # Counters of another domain that once had this name say nothing about this one.
    if prev is not None and prev.uuid != cur.uuid:
        prev = None
    memory = cur.memory_used_bytes
    result: dict[str, float | None] = dict.fromkeys(METRICS)
    result["memory"] = float(memory) if memory is not None else None
    if prev is None or prev_at is None:
        return result
    seconds = _elapsed(prev_at, cur_at)
    result["cpu"] = cpu_percent(prev.cpu_time_ns, cur.cpu_time_ns, seconds, cur.vcpus)
    result["disk_read"] = rate(prev.disk_read_bytes, cur.disk_read_bytes, seconds)
    result["disk_write"] = rate(prev.disk_write_bytes, cur.disk_write_bytes, seconds)
    result["net_rx"] = rate(prev.net_rx_bytes, cur.net_rx_bytes, seconds)
    result["net_tx"] = rate(prev.net_tx_bytes, cur.net_tx_bytes, seconds)
    return result


def host_cpu_percent(prev: HostSample | None, cur: HostSample) -> float | None:
    """Return the share of CPU time the host spent busy between two samples, in percent."""
    if prev is None:
        return None
    busy = _increase(prev.cpu_busy_ns, cur.cpu_busy_ns)
    total = _increase(prev.cpu_total_ns, cur.cpu_total_ns)
    if busy is None or not total:
        return None
    return min(max(100.0 * busy / total, 0.0), 100.0)


def host_metrics(
    prev: HostSample | None,
    prev_at: float | None,
    cur: HostSample,
    cur_at: float,
    prev_io: HostIO | None = None,
    cur_io: HostIO | None = None,
) -> dict[str, float | None]:
    """Return the host's CPU %, memory in use and disk and network rates since prev."""
    result: dict[str, float | None] = dict.fromkeys(METRICS)
    if cur.memory_total_bytes is not None and cur.memory_free_bytes is not None:
        result["memory"] = float(max(cur.memory_total_bytes - cur.memory_free_bytes, 0))
    if prev is None or prev_at is None:
        return result
    result["cpu"] = host_cpu_percent(prev, cur)
    if prev_io is not None and cur_io is not None:
        seconds = _elapsed(prev_at, cur_at)
        result["disk_read"] = rate(prev_io.disk_read_bytes, cur_io.disk_read_bytes, seconds)
        result["disk_write"] = rate(prev_io.disk_write_bytes, cur_io.disk_write_bytes, seconds)
        result["net_rx"] = rate(prev_io.net_rx_bytes, cur_io.net_rx_bytes, seconds)
        result["net_tx"] = rate(prev_io.net_tx_bytes, cur_io.net_tx_bytes, seconds)
    return result


def _partition_of(name: str, disks: set[str]) -> bool:
    """Return whether name is a partition of a listed disk: sda1 of sda, nvme0n1p2 of nvme0n1."""
    for disk in disks:
        if name == disk or not name.startswith(disk):
            continue
        # The kernel puts a "p" between a disk name ending in a digit and the partition number.
        suffix = r"p\d+" if disk[-1].isdigit() else r"\d+"
        if re.fullmatch(suffix, name[len(disk):]):
            return True
    return False


def parse_proc_diskstats(text: str) -> tuple[int, int]:
    """Return (bytes read, bytes written) summed over the whole physical disks in diskstats."""
    rows: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        # major minor name reads merged sectors_read ms writes merged sectors_written ...
        if len(fields) < 10 or fields[2].startswith(DISK_SKIP_PREFIXES):
            continue
        try:
            rows[fields[2]] = (int(fields[5]), int(fields[9]))
        except ValueError:
            continue
    names = set(rows)
    read = written = 0
    for name, (sectors_read, sectors_written) in rows.items():
        if _partition_of(name, names):
            continue
        read += sectors_read * SECTOR_BYTES
        written += sectors_written * SECTOR_BYTES
    return read, written


def parse_proc_net_dev(text: str) -> tuple[int, int]:
    """Return (bytes received, bytes sent) summed over the host's own interfaces."""
    rx = tx = 0
    for line in text.splitlines():
        name, sep, counters = line.partition(":")
        name = name.strip()
        # The two header lines have no colon.
        if not sep or name in NET_SKIP_NAMES or name.startswith(NET_SKIP_PREFIXES):
            continue
        fields = counters.split()
        # rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
        if len(fields) < 9:
            continue
        try:
            rx += int(fields[0])
            tx += int(fields[8])
        except ValueError:
            continue
    return rx, tx

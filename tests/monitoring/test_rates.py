"""Tests of CPU percentages, rates and the /proc parsers: pure functions, no database."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hosts.virt import DomainSample, HostSample
from monitoring.rates import (
    METRICS,
    HostIO,
    cpu_percent,
    host_metrics,
    parse_proc_diskstats,
    parse_proc_net_dev,
    rate,
    vm_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
UUID = "4d3c2b1a-0000-4000-8000-000000000001"
GIB = 1024**3


def vm(
    cpu_ns: int | None = 0, vcpus: int | None = 2, disk: int | None = 0, net: int | None = 0,
    used: int | None = GIB, uuid: str = UUID, state: str = "running",
) -> DomainSample:
    return DomainSample(
        name="web1", uuid=uuid, state=state, vcpus=vcpus, cpu_time_ns=cpu_ns,
        memory_bytes=2 * GIB, memory_used_bytes=used,
        disk_read_bytes=disk, disk_write_bytes=disk and disk // 2,
        net_rx_bytes=net, net_tx_bytes=net and net * 3,
    )  # fmt: skip


def host(busy: int | None, total: int | None, mem_total: int | None = 16 * GIB,
         mem_free: int | None = 10 * GIB) -> HostSample:
    return HostSample(cpus=8, cpu_busy_ns=busy, cpu_total_ns=total,
                      memory_total_bytes=mem_total, memory_free_bytes=mem_free)


# -- rate and cpu_percent ----------------------------------------------------------------------


def test_rate_is_the_increase_per_second() -> None:
    assert rate(1_000, 6_000, 10) == 500.0
    assert rate(7, 7, 60) == 0.0


def test_rate_is_unknown_when_a_counter_is_missing() -> None:
    assert rate(None, 6_000, 10) is None
    assert rate(1_000, None, 10) is None


def test_rate_of_a_counter_that_went_back_is_unknown_not_a_spike() -> None:
    # A restarted domain or a wrapped counter starts again from a small number.
    assert rate(10**12, 4_096, 60) is None


@pytest.mark.parametrize("seconds", [0, -5, 0.0, float("nan"), float("inf")])
def test_rate_over_no_time_or_backwards_time_is_unknown(seconds: float) -> None:
    assert rate(1_000, 2_000, seconds) is None
    assert cpu_percent(0, 10**9, seconds, 1) is None


def test_cpu_percent_of_one_busy_vcpu() -> None:
    assert cpu_percent(0, 30 * 10**9, 60, 1) == pytest.approx(50.0)


def test_cpu_percent_divides_by_every_vcpu() -> None:
    # 60 s of CPU in 60 s is one whole vCPU: a quarter of four.
    assert cpu_percent(10**9, 61 * 10**9, 60, 4) == pytest.approx(25.0)


def test_cpu_percent_is_clamped_to_100() -> None:
    # The cycle may run late and the counters include qemu's own threads.
    assert cpu_percent(0, 200 * 10**9, 60, 2) == 100.0


@pytest.mark.parametrize("vcpus", [None, 0])
def test_cpu_percent_needs_vcpus(vcpus: int | None) -> None:
    assert cpu_percent(0, 10**9, 1, vcpus) is None


def test_cpu_percent_after_a_restart_is_unknown() -> None:
    assert cpu_percent(90 * 10**9, 2 * 10**9, 60, 1) is None


# -- vm_metrics --------------------------------------------------------------------------------


def test_first_sample_gives_unknown_rates_not_zero() -> None:
    metrics = vm_metrics(None, None, vm(cpu_ns=5 * 10**9, disk=4096, net=100), 1_000.0)
    assert tuple(metrics) == METRICS
    assert metrics == {"cpu": None, "memory": float(GIB), "disk_read": None,
                       "disk_write": None, "net_rx": None, "net_tx": None}


def test_steady_increase_gives_the_right_rates() -> None:
    prev = vm(cpu_ns=10 * 10**9, disk=1_000_000, net=50_000)
    cur = vm(cpu_ns=40 * 10**9, disk=7_000_000, net=110_000, used=GIB + 4096)
    metrics = vm_metrics(prev, 1_000.0, cur, 1_060.0)
    assert metrics == {
        "cpu": pytest.approx(25.0),  # 30 s of CPU over 60 s on 2 vCPUs
        "memory": float(GIB + 4096),  # a gauge: the current value, no delta
        "disk_read": pytest.approx(100_000.0),
        "disk_write": pytest.approx(50_000.0),
        "net_rx": pytest.approx(1_000.0),
        "net_tx": pytest.approx(3_000.0),
    }


def test_restarted_domain_gives_unknown_rates_not_a_spike() -> None:
    prev = vm(cpu_ns=900 * 10**9, disk=10**9, net=10**8)
    cur = vm(cpu_ns=3 * 10**9, disk=4096, net=90)
    metrics = vm_metrics(prev, 1_000.0, cur, 1_060.0)
    assert [metrics[k] for k in ("cpu", "disk_read", "disk_write", "net_rx", "net_tx")] == [
        None] * 5
    assert metrics["memory"] == float(GIB)


def test_domain_that_was_shut_off_in_the_previous_sample_gives_unknown_rates() -> None:
    prev = vm(cpu_ns=None, disk=None, net=None, used=None, state="shutoff")
    metrics = vm_metrics(prev, 1_000.0, vm(cpu_ns=10**9, disk=512, net=90), 1_060.0)
    assert metrics["cpu"] is None and metrics["disk_read"] is None
    assert metrics["memory"] == float(GIB)


def test_a_new_domain_with_the_same_name_is_not_compared_with_the_old_one() -> None:
    prev = vm(cpu_ns=1 * 10**9, disk=0, net=0, uuid="00000000-0000-4000-8000-00000000dead")
    metrics = vm_metrics(prev, 1_000.0, vm(cpu_ns=50 * 10**9, disk=10**6, net=10**6), 1_060.0)
    assert all(metrics[k] is None for k in METRICS if k != "memory")


def test_shut_off_domain_has_no_memory_in_use() -> None:
    cur = vm(cpu_ns=None, disk=None, net=None, used=None, state="shutoff")
    assert vm_metrics(vm(), 1_000.0, cur, 1_060.0) == dict.fromkeys(METRICS)


def test_samples_at_the_same_time_give_unknown_rates() -> None:
    metrics = vm_metrics(vm(), 1_000.0, vm(cpu_ns=10**9, disk=10, net=10), 1_000.0)
    assert metrics["cpu"] is None and metrics["net_rx"] is None


# -- host_metrics ------------------------------------------------------------------------------


def test_host_cpu_is_busy_time_over_total_time() -> None:
    prev = host(busy=1_000 * 10**9, total=8_000 * 10**9)
    cur = host(busy=1_120 * 10**9, total=8_480 * 10**9)
    metrics = host_metrics(prev, 1_000.0, cur, 1_060.0)
    assert tuple(metrics) == METRICS
    assert metrics["cpu"] == pytest.approx(25.0)
    assert metrics["memory"] == float(6 * GIB)
    assert metrics["disk_read"] is None and metrics["net_tx"] is None  # no /proc counters


def test_host_first_sample_has_memory_but_no_cpu() -> None:
    metrics = host_metrics(None, None, host(busy=10, total=100), 1_000.0)
    assert metrics["cpu"] is None
    assert metrics["memory"] == float(6 * GIB)


@pytest.mark.parametrize(
    "prev, cur",
    [
        ((100, 1_000), (100, 1_000)),  # no time passed on the host's clock
        ((100, 1_000), (50, 500)),  # the host rebooted
        ((None, None), (100, 1_000)),  # the driver keeps no CPU stats
    ],
)
def test_host_cpu_without_a_positive_total_delta_is_unknown(
    prev: tuple[int | None, int | None], cur: tuple[int | None, int | None]
) -> None:
    assert host_metrics(host(*prev), 1_000.0, host(*cur), 1_060.0)["cpu"] is None


def test_host_memory_is_unknown_without_node_memory_stats() -> None:
    metrics = host_metrics(None, None, host(1, 2, mem_total=None, mem_free=None), 1_000.0)
    assert metrics["memory"] is None


def test_host_disk_and_network_rates_come_from_proc_counters() -> None:
    prev_io = HostIO(disk_read_bytes=10**6, disk_write_bytes=2 * 10**6,
                     net_rx_bytes=5_000, net_tx_bytes=7_000)
    cur_io = HostIO(disk_read_bytes=4 * 10**6, disk_write_bytes=2 * 10**6,
                    net_rx_bytes=1_000, net_tx_bytes=None)  # rx went back: the host rebooted
    metrics = host_metrics(host(0, 0), 1_000.0, host(10, 100), 1_030.0, prev_io, cur_io)
    assert metrics["disk_read"] == pytest.approx(100_000.0)
    assert metrics["disk_write"] == 0.0
    assert metrics["net_rx"] is None
    assert metrics["net_tx"] is None
    assert metrics["cpu"] == pytest.approx(10.0)


def test_host_rates_need_both_io_samples() -> None:
    io = HostIO(1, 2, 3, 4)
    metrics = host_metrics(host(0, 0), 1_000.0, host(10, 100), 1_030.0, None, io)
    assert metrics["disk_read"] is None and metrics["net_rx"] is None


# -- /proc parsers -----------------------------------------------------------------------------

DISKSTATS = """\
   7       0 loop0 52 0 2110 13 0 0 0 0 0 36 13 0 0 0 0 0 0
   7       1 loop1 1094 0 4384 141 0 0 0 0 0 152 141 0 0 0 0 0 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 259       0 nvme0n1 180403 52311 14826918 40817 393104 259866 21513552 275010 0 263364 339370 0 0 0 0 31133 23542
 259       1 nvme0n1p1 316 1025 14392 58 2 0 2 0 0 93 58 0 0 0 0 0 0
 259       2 nvme0n1p2 180019 51286 14806262 40747 362971 259866 21513550 253446 0 251648 294193 0 0 0 0 0 0
   8       0 sda 2000 10 100000 500 1000 20 50000 300 0 400 800 0 0 0 0
   8       1 sda1 1990 10 99000 490 1000 20 50000 300 0 390 790 0 0 0 0
   8      16 sdb 40 0 800 10 0 0 0 0 0 10 10 0 0 0 0
 253       0 dm-0 170000 0 14000000 40000 600000 0 21000000 300000 0 250000 340000 0 0 0 0
   9       0 md0 10 0 80 0 10 0 80 0 0 0 0 0 0 0 0
 252       0 zram0 100 0 800 0 200 0 1600 0 0 0 0 0 0 0 0
  11       0 sr0 15 0 60 2 0 0 0 0 0 8 2 0 0 0 0 0 0
 179       0 mmcblk0 300 0 6000 10 30 0 600 5 0 15 15 0 0 0 0
 179       1 mmcblk0p1 290 0 5800 10 30 0 600 5 0 15 15 0 0 0 0
"""  # noqa: E501 - the kernel's own line width


def test_diskstats_sums_whole_disks_in_bytes() -> None:
    sectors_read = 14826918 + 100000 + 800 + 6000  # nvme0n1, sda, sdb, mmcblk0
    sectors_written = 21513552 + 50000 + 0 + 600
    assert parse_proc_diskstats(DISKSTATS) == (sectors_read * 512, sectors_written * 512)


def test_diskstats_counts_a_partition_whose_disk_is_not_listed() -> None:
    text = " 202 1 xvda1 10 0 40 0 5 0 16 0 0 0 0\n"
    assert parse_proc_diskstats(text) == (40 * 512, 16 * 512)


def test_diskstats_keeps_a_tenth_namespace_apart_from_partitions() -> None:
    text = (" 259 0 nvme0n1 1 0 10 0 1 0 20 0 0 0 0\n"
            " 259 9 nvme0n10 1 0 30 0 1 0 40 0 0 0 0\n")
    assert parse_proc_diskstats(text) == (40 * 512, 60 * 512)


def test_diskstats_ignores_empty_and_malformed_lines() -> None:
    assert parse_proc_diskstats("") == (0, 0)
    assert parse_proc_diskstats("garbage\n 8 0 sda x y z 1 2 3 4 5\n") == (0, 0)


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 395370027  498898    0    0    0     0          0         0 395370027  498898    0    0    0     0       0          0
  eth0: 284086336    9668    0    0    0     0          0         0   636910    6825    0    0    0     0       0          0
  eno2:1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
virbr0:    5000      50    0    0    0     0          0         0     6000      60    0    2    0     0       0          0
 vnet0:    7000      70    0    0    0     0          0         0     8000      80    0    0    0     0       0          0
 tap12:      10       1    0    0    0     0          0         0       10       1    0    0    0     0       0          0
veth1a2b:    11       1    0    0    0     0          0         0       11       1    0    0    0     0       0          0
docker0:     12       1    0    0    0     0          0         0       12       1    0    0    0     0       0          0
br-4f2a9c:   13       1    0    0    0     0          0         0       13       1    0    0    0     0       0          0
"""  # noqa: E501 - the kernel's own line width


def test_net_dev_sums_the_hosts_own_interfaces() -> None:
    assert parse_proc_net_dev(NET_DEV) == (284086336 + 1000, 636910 + 2000)


def test_net_dev_ignores_headers_and_short_lines() -> None:
    assert parse_proc_net_dev(NET_DEV.splitlines()[0]) == (0, 0)
    assert parse_proc_net_dev("eth1: 1 2 3\n") == (0, 0)


def test_parsers_accept_this_machines_proc_files() -> None:
    for path, parse in (("/proc/diskstats", parse_proc_diskstats),
                        ("/proc/net/dev", parse_proc_net_dev)):
        if Path(path).exists():
            first, second = parse(Path(path).read_text())
            assert first >= 0 and second >= 0


def test_rates_module_imports_neither_django_nor_libvirt() -> None:
    code = ("import sys, monitoring.rates; "
            "print(sorted(m for m in ('django', 'libvirt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"


def test_metrics_accept_samples_read_back_from_json_dicts() -> None:
    prev = DomainSample(**dataclasses.asdict(vm(cpu_ns=0)))
    assert vm_metrics(prev, 0.0, vm(cpu_ns=60 * 10**9), 60.0)["cpu"] == pytest.approx(50.0)

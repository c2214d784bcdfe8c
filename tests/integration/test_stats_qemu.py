"""Hypervisor-tier tests of utilisation sampling against a real guest on qemu:///system.

Like tests/integration/test_virt_qemu.py, each test works in its own directory under
/var/tmp, its own storage pool and its own isolated network without <ip>, all named
portaltest-<random> and removed in fixture teardown.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hosts.virt import DomainSample, Hypervisor
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from monitoring.rates import host_metrics, vm_metrics
from tests.integration.qemu import MIB, guest_kind, unique, virsh

pytestmark = pytest.mark.hypervisor

# Under TCG the BIOS takes a few seconds to read the boot sector.
BOOT_TIMEOUT_S = 60


@pytest.fixture
def network(hv: Hypervisor) -> Iterator[str]:
    """Return the name of an active isolated network without <ip>."""
    name = unique()
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    hv.ensure_network(ET.tostring(root, encoding="unicode"))
    yield name
    virsh("net-destroy", name, check=False)
    virsh("net-undefine", name, check=False)


def sample_named(samples: list[DomainSample], name: str) -> DomainSample:
    found = [s for s in samples if s.name == name]
    assert len(found) == 1, f"{name} missing from {[s.name for s in samples]}"
    return found[0]


def wait_for_sample(
    hv: Hypervisor, name: str, ready: Callable[[DomainSample], bool]
) -> DomainSample:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while True:
        sample = sample_named(hv.domain_samples(), name)
        if ready(sample) or time.monotonic() > deadline:
            return sample
        time.sleep(0.5)


def test_bulk_sample_of_a_running_guest_has_every_counter_and_a_cpu_rate(
    hv: Hypervisor, pool: tuple[str, Path], network: str, domain_name: str
) -> None:
    pool_name, base = pool
    disk = hv.create_overlay(pool_name, f"{domain_name}.qcow2", str(base), 8 * MIB)
    spec = DomainSpec(
        name=domain_name,
        uuid=str(uuid.uuid4()),
        **guest_kind(hv),
        vcpus=1,
        memory_mib=64,
        disk_path=disk,
        network=network,
    )
    hv.define_domain(build_domain_xml(spec))

    stopped = sample_named(hv.domain_samples(), domain_name)
    assert stopped.state == "shutoff"
    assert stopped.uuid == spec.uuid
    assert (stopped.vcpus, stopped.memory_bytes) == (1, 64 * MIB)
    assert stopped.cpu_time_ns is None and stopped.disk_read_bytes is None

    hv.start(domain_name)
    # The BIOS reads the boot sector, then the guest spins on its one vCPU.
    first = wait_for_sample(hv, domain_name, lambda s: bool(s.disk_read_bytes))
    first_at = time.time()
    assert first.state == "running"
    assert first.vcpus == 1
    assert first.cpu_time_ns is not None and first.cpu_time_ns > 0
    assert first.memory_bytes == 64 * MIB
    assert first.memory_used_bytes is not None and first.memory_used_bytes > 0
    assert first.disk_read_bytes is not None and first.disk_read_bytes >= 512
    assert first.disk_write_bytes is not None
    assert first.net_rx_bytes is not None and first.net_tx_bytes is not None

    time.sleep(1)
    second = sample_named(hv.domain_samples(), domain_name)
    metrics = vm_metrics(first, first_at, second, time.time())
    assert metrics["cpu"] is not None and 0 < metrics["cpu"] <= 100
    assert metrics["memory"] == second.memory_used_bytes
    assert metrics["disk_read"] is not None and metrics["disk_read"] >= 0
    assert vm_metrics(None, None, second, time.time())["cpu"] is None

    # The per-domain baseline reads the same counters, a little later.
    looped = sample_named(hv.domain_samples_loop(), domain_name)
    assert (looped.uuid, looped.state, looped.vcpus) == (spec.uuid, "running", 1)
    assert looped.memory_bytes == second.memory_bytes
    # dom.info() counts CPU time in clock ticks (10 ms), the bulk call in nanoseconds.
    assert looped.cpu_time_ns is not None
    assert looped.cpu_time_ns >= second.cpu_time_ns - 10_000_000
    assert looped.disk_read_bytes is not None
    assert looped.disk_read_bytes >= (second.disk_read_bytes or 0)
    assert looped.net_rx_bytes is not None

    hv.destroy(domain_name)
    off = sample_named(hv.domain_samples(), domain_name)
    assert off.state == "shutoff"
    assert off.cpu_time_ns is None and off.memory_used_bytes is None
    assert vm_metrics(second, first_at + 1, off, time.time())["cpu"] is None


def test_host_sample_reads_cpu_time_and_memory_of_the_real_host(hv: Hypervisor) -> None:
    first, first_at = hv.host_sample(), time.time()
    assert first.cpus == hv.facts().cpus
    assert first.cpu_busy_ns is not None and first.cpu_total_ns is not None
    assert 0 < first.cpu_busy_ns < first.cpu_total_ns
    assert first.memory_total_bytes is not None and first.memory_free_bytes is not None
    assert 0 < first.memory_free_bytes < first.memory_total_bytes
    time.sleep(0.5)
    second = hv.host_sample()
    metrics = host_metrics(first, first_at, second, time.time())
    assert metrics["cpu"] is not None and 0 <= metrics["cpu"] <= 100
    assert metrics["memory"] is not None and metrics["memory"] > 0

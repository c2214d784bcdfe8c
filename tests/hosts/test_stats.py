"""Fast tests of utilisation sampling: record parsing and libvirt's in-process test driver.

Each driver test gets its own host, a node file in tmp_path opened as `test://<path>`, so no
domain leaks from one test into the next (see tests/hosts/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hosts.virt.base as virt_base
from hosts.virt import (
    DOMAIN_STATES,
    DomainSample,
    HostSample,
    Hypervisor,
    VirtError,
    close_all,
    get_connection,
)
from hosts.virt.stats import (
    device_targets,
    domain_sample_from_calls,
    domain_sample_from_record,
    host_sample_from_stats,
)
from tests.virt_host import domain_xml, write_node_file

KIB = 1024
UUID = "4d3c2b1a-0000-4000-8000-000000000001"

# A running qemu domain with two disks (one an empty CD-ROM) and two interfaces, as
# libvirt 9.0 reports it (trimmed of the per-vCPU counters the portal does not read).
RUNNING_RECORD: dict[str, Any] = {
    "state.state": 1, "state.reason": 1,
    "cpu.time": 52_345_678_901, "cpu.user": 2_000_000_000, "cpu.system": 40_000_000_000,
    "balloon.current": 2_097_152, "balloon.maximum": 2_097_152, "balloon.last-update": 0,
    "balloon.rss": 1_572_864, "balloon.unused": 1_048_576, "balloon.available": 2_000_000,
    "vcpu.current": 2, "vcpu.maximum": 4, "vcpu.0.state": 1, "vcpu.0.time": 30_000_000_000,
    "vcpu.1.state": 1, "vcpu.1.time": 20_000_000_000,
    "net.count": 2,
    "net.0.name": "vnet3", "net.0.rx.bytes": 1_000, "net.0.rx.pkts": 10,
    "net.0.tx.bytes": 2_000, "net.0.tx.pkts": 20,
    "net.1.name": "vnet4", "net.1.rx.bytes": 30_000, "net.1.rx.pkts": 300,
    "net.1.tx.bytes": 40_000, "net.1.tx.pkts": 400,
    "block.count": 2,
    "block.0.name": "vda", "block.0.path": "/srv/portal/web1.qcow2",
    "block.0.rd.reqs": 900, "block.0.rd.bytes": 9_437_184,
    "block.0.wr.reqs": 300, "block.0.wr.bytes": 1_048_576,
    "block.0.capacity": 10_737_418_240, "block.0.allocation": 2_147_483_648,
    "block.1.name": "sdb", "block.1.rd.reqs": 2, "block.1.rd.bytes": 1_024,
    "block.1.wr.reqs": 0, "block.1.wr.bytes": 0,
}  # fmt: skip

# A shut-off qemu domain: libvirt still reports its configured size, and a cpu.time that is
# really libvirtd's own (libvirt 9.0 reads /proc of pid 0), and disks without counters.
SHUTOFF_RECORD: dict[str, Any] = {
    "state.state": 5, "state.reason": 0,
    "cpu.time": 23_990_000_000, "cpu.user": 9_750_000_000, "cpu.system": 14_240_000_000,
    "balloon.current": 65_536, "balloon.maximum": 65_536,
    "vcpu.current": 1, "vcpu.maximum": 1,
    "block.count": 1, "block.0.name": "vda", "block.0.capacity": 8_388_608,
}  # fmt: skip


def sample_of(record: dict[str, Any]) -> DomainSample:
    return domain_sample_from_record("web1", UUID, record, DOMAIN_STATES)


# -- parsing getAllDomainStats records -------------------------------------------------------


def test_running_record_gives_every_counter_summed_over_devices() -> None:
    assert sample_of(RUNNING_RECORD) == DomainSample(
        name="web1",
        uuid=UUID,
        state="running",
        vcpus=2,
        cpu_time_ns=52_345_678_901,
        memory_bytes=2_097_152 * KIB,
        memory_used_bytes=1_572_864 * KIB,
        disk_read_bytes=9_437_184 + 1_024,
        disk_write_bytes=1_048_576,
        net_rx_bytes=31_000,
        net_tx_bytes=42_000,
    )


def test_memory_used_falls_back_to_current_minus_unused_without_rss() -> None:
    record = {k: v for k, v in RUNNING_RECORD.items() if k != "balloon.rss"}
    assert sample_of(record).memory_used_bytes == (2_097_152 - 1_048_576) * KIB


def test_memory_used_is_none_without_rss_or_unused() -> None:
    record = {k: v for k, v in RUNNING_RECORD.items()
              if k not in ("balloon.rss", "balloon.unused")}
    sample = sample_of(record)
    assert sample.memory_used_bytes is None
    assert sample.memory_bytes == 2_097_152 * KIB


def test_record_with_state_only_gives_none_for_every_counter() -> None:
    sample = sample_of({"state.state": 1, "state.reason": 0})
    assert (sample.name, sample.uuid, sample.state) == ("web1", UUID, "running")
    assert all(
        getattr(sample, f.name) is None
        for f in dataclasses.fields(sample) if f.name not in ("name", "uuid", "state")
    )


@pytest.mark.parametrize("code, name", [(3, "paused"), (5, "shutoff"), (99, "nostate")])
def test_state_codes_map_to_the_names_of_domain_states(code: int, name: str) -> None:
    assert sample_of({"state.state": code}).state == name
    assert sample_of({}).state == "nostate"


def test_shut_off_domain_keeps_its_size_but_has_no_usage_counters() -> None:
    sample = sample_of(SHUTOFF_RECORD)
    assert sample.state == "shutoff"
    assert (sample.vcpus, sample.memory_bytes) == (1, 65_536 * KIB)
    assert sample.cpu_time_ns is None  # not libvirtd's CPU time passed off as the guest's
    assert sample.memory_used_bytes is None
    assert (sample.disk_read_bytes, sample.disk_write_bytes) == (None, None)
    assert (sample.net_rx_bytes, sample.net_tx_bytes) == (None, None)


def test_a_device_without_its_counter_makes_the_whole_sum_unknown() -> None:
    # A partial sum would dip for one sample and come back as a burst in the next rate.
    record = {k: v for k, v in RUNNING_RECORD.items() if k != "block.1.rd.bytes"}
    sample = sample_of(record)
    assert sample.disk_read_bytes is None
    assert sample.disk_write_bytes == 1_048_576
    assert sample.net_rx_bytes == 31_000


def test_no_devices_sum_to_zero_and_no_count_to_none() -> None:
    sample = sample_of({"state.state": 1, "block.count": 0, "net.count": 0})
    assert (sample.disk_read_bytes, sample.net_tx_bytes) == (0, 0)
    assert sample_of({"state.state": 1, "net.0.rx.bytes": 5}).net_rx_bytes is None


def test_samples_survive_a_json_round_trip() -> None:
    sample = sample_of(RUNNING_RECORD)
    assert DomainSample(**json.loads(json.dumps(dataclasses.asdict(sample)))) == sample
    host = host_sample_from_stats(4, {"kernel": 1, "user": 2, "idle": 3, "iowait": 4}, None)
    assert HostSample(**json.loads(json.dumps(dataclasses.asdict(host)))) == host


def test_per_domain_calls_parse_like_the_bulk_record() -> None:
    info = [1, 2_097_152, 2_097_152, 2, 52_345_678_901]
    memory = {"actual": 2_097_152, "rss": 1_572_864, "unused": 1_048_576}
    blocks = [(900, 9_437_184, 300, 1_048_576, -1), (2, 1_024, 0, 0, -1)]
    nics = [(1_000, 10, 0, 0, 2_000, 20, 0, 0), (30_000, 300, 0, 0, 40_000, 400, 0, 0)]
    built = domain_sample_from_calls("web1", UUID, "running", info, memory, blocks, nics)
    assert built == sample_of(RUNNING_RECORD)


def test_per_domain_calls_that_failed_give_none() -> None:
    sample = domain_sample_from_calls("web1", UUID, "running", None, None,
                                      [(1, 512, 0, 0, 0), None], None)
    assert (sample.vcpus, sample.cpu_time_ns, sample.memory_bytes) == (None, None, None)
    assert sample.disk_read_bytes is None
    assert sample.net_rx_bytes is None


def test_device_targets_read_disks_and_interfaces_from_domain_xml() -> None:
    xml = (
        "<domain><devices>"
        "<disk type='file'><target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='cdrom'><target dev='sdb' bus='sata'/></disk>"
        "<interface type='network'><target dev='vnet0'/></interface>"
        "<interface type='network'><source network='lab'/></interface>"  # not running
        "</devices></domain>"
    )
    assert device_targets(xml) == (["vda", "sdb"], ["vnet0"])
    assert device_targets("<domain/>") == ([], [])


def test_host_stats_sum_busy_and_total_cpu_time_and_free_memory() -> None:
    cpu = {"kernel": 500, "user": 2_000, "idle": 3_000, "iowait": 40}
    memory = {"total": 24_684_092, "free": 23_135_140, "buffers": 15_708, "cached": 755_812}
    assert host_sample_from_stats(2, cpu, memory) == HostSample(
        cpus=2,
        cpu_busy_ns=2_500,
        cpu_total_ns=5_540,
        memory_total_bytes=24_684_092 * KIB,
        memory_free_bytes=(23_135_140 + 15_708 + 755_812) * KIB,
    )
    assert host_sample_from_stats(2, None, None) == HostSample(2, None, None, None, None)


# -- the test driver -----------------------------------------------------------------------


def stats_domain_xml(name: str, index: int) -> str:
    """Build a test-driver domain with one disk and one interface."""
    return domain_xml(name, memory_mib=128, vcpus=2, disk=f"/srv/portal/{name}.qcow2",
                      mac=f"52:54:00:00:00:{index:02x}")


@pytest.fixture
def uri(tmp_path: Path) -> Iterator[str]:
    close_all()
    yield write_node_file(tmp_path / "node.xml")
    close_all()


@pytest.fixture
def hv(uri: str) -> Hypervisor:
    """Return a host with web1 and web2 running and web3 shut off."""
    hv = Hypervisor(uri)
    for index, name in enumerate(("web2", "web1", "web3"), start=1):
        hv.define_domain(stats_domain_xml(name, index))
        if name != "web3":
            hv.start(name)
    return hv


class Counting:
    """Wrap a libvirt object and count the methods called on it, by name."""

    def __init__(self, target: Any, calls: Counter[str], prefix: str = "") -> None:
        self._target, self._calls, self._prefix = target, calls, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls[self._prefix + name] += 1
            result = attr(*args, **kwargs)
            if name == "getAllDomainStats":
                return [(Counting(dom, self._calls, "domain."), rec) for dom, rec in result]
            if name == "listAllDomains":
                return [Counting(dom, self._calls, "domain.") for dom in result]
            return result

        return call


@pytest.fixture
def calls(uri: str, hv: Hypervisor, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every call the hypervisor makes on its connection and on domain handles."""
    counted: Counter[str] = Counter()
    conn = Counting(get_connection(uri), counted)
    monkeypatch.setattr(virt_base, "get_connection", lambda _uri: conn)
    return counted


def test_domain_samples_reads_every_domain_with_one_bulk_call(
    hv: Hypervisor, calls: Counter[str]
) -> None:
    samples = hv.domain_samples()
    assert [(s.name, s.state) for s in samples] == [
        ("web1", "running"), ("web2", "running"), ("web3", "shutoff"),
    ]  # fmt: skip
    assert len({s.uuid for s in samples}) == 3
    assert calls["getAllDomainStats"] == 1
    # Only the handle's own name and UUID are read: nothing that reaches libvirtd per domain.
    assert set(calls) == {"getAllDomainStats", "domain.name", "domain.UUIDString"}


def test_domain_samples_from_the_test_driver_have_state_only(hv: Hypervisor) -> None:
    # The test driver answers state.* only; every counter is then unknown, never 0.
    for sample in hv.domain_samples():
        assert sample.cpu_time_ns is None
        assert sample.memory_bytes is None
        assert sample.disk_read_bytes is None
        assert sample.net_tx_bytes is None


def test_domain_samples_of_an_empty_host_is_empty(uri: str) -> None:
    assert Hypervisor(uri).domain_samples() == []


def test_domain_samples_loop_calls_libvirt_for_each_domain_and_device(
    hv: Hypervisor, calls: Counter[str]
) -> None:
    samples = {s.name: s for s in hv.domain_samples_loop()}
    assert sorted(samples) == ["web1", "web2", "web3"]
    assert calls["listAllDomains"] == 1
    assert calls["domain.info"] == 3
    # Only running domains have live counters and device targets to ask about.
    assert calls["domain.memoryStats"] == calls["domain.blockStats"] == 2
    assert calls["domain.interfaceStats"] == 2
    for name in ("web1", "web2"):
        sample = samples[name]
        assert sample.state == "running"
        assert sample.vcpus == 2
        assert sample.memory_bytes == 128 * 1024 * KIB
        assert sample.cpu_time_ns and sample.cpu_time_ns > 0
        assert sample.disk_read_bytes and sample.disk_read_bytes > 0
        assert sample.net_rx_bytes and sample.net_rx_bytes > 0
    web3 = samples["web3"]
    assert web3.state == "shutoff"
    assert (web3.cpu_time_ns, web3.disk_read_bytes, web3.net_rx_bytes) == (None, None, None)


def test_host_sample_gives_sane_cpu_counters_on_the_test_driver(uri: str) -> None:
    sample = Hypervisor(uri).host_sample()
    assert sample.cpus == 4
    assert sample.cpu_busy_ns is not None and sample.cpu_total_ns is not None
    assert 0 < sample.cpu_busy_ns <= sample.cpu_total_ns
    # The test driver has no node memory stats: unknown, not an error and not 0.
    assert (sample.memory_total_bytes, sample.memory_free_bytes) == (None, None)


def failing(message: str) -> Callable[..., Any]:
    def call(*_args: Any) -> Any:
        raise virt_base.libvirt.libvirtError(message)

    return call


def test_a_failed_bulk_call_raises_virt_error_naming_the_host(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = get_connection(uri)

    class Broken:
        getAllDomainStats = staticmethod(failing("connection reset"))

        def __getattr__(self, name: str) -> Any:
            return getattr(conn, name)

    monkeypatch.setattr(virt_base, "get_connection", lambda _uri: Broken())
    with pytest.raises(VirtError, match=f"cannot read stats of domains on {uri}"):
        Hypervisor(uri).domain_samples()

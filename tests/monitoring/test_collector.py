"""Collection: one bulk call per host, rates from counter deltas, history in RRD files."""

from __future__ import annotations

import dataclasses
import time

import pytest

from hosts.virt import DomainSample, HostSample, Hypervisor
from monitoring import collector
from monitoring.collector import host_collect, rrd_store, vm_key
from monitoring.models import LastSample
from operations.models import OperationKind
from tests.vms.test_lifecycle import act, install

pytestmark = pytest.mark.django_db
GIB = 1024**3


def sample(vm, cpu_s: float, rd: int = 0, rx: int = 0, **kw) -> DomainSample:
    values = {"name": vm.domain_name, "uuid": str(vm.uuid), "state": "running", "vcpus": 1,
              "cpu_time_ns": int(cpu_s * 1e9), "memory_bytes": GIB,
              "memory_used_bytes": GIB // 2, "disk_read_bytes": rd, "disk_write_bytes": 0,
              "net_rx_bytes": rx, "net_tx_bytes": 0}
    values.update(kw)
    return DomainSample(**values)


# Graphs and fetches look back from now, so samples must be recent.
RECENT = int(time.time()) // 300 * 300 - 1800
NODE = HostSample(cpus=2, cpu_busy_ns=0, cpu_total_ns=0, memory_total_bytes=8 * GIB,
                  memory_free_bytes=6 * GIB)


@pytest.fixture
def fake_host(monkeypatch):
    """Feed host_collect chosen samples; count the libvirt calls it makes."""
    state = {"domains": [], "node": NODE, "bulk_calls": 0, "loop_calls": 0}

    def bulk(self):
        state["bulk_calls"] += 1
        return state["domains"]

    def loop(self):
        state["loop_calls"] += 1
        return []

    monkeypatch.setattr(Hypervisor, "domain_samples", bulk)
    monkeypatch.setattr(Hypervisor, "domain_samples_loop", loop)
    monkeypatch.setattr(Hypervisor, "host_sample", lambda self: state["node"])
    monkeypatch.setattr(collector, "_host_io", lambda host: None)
    return state


def test_each_cycle_makes_one_bulk_call_for_all_domains(site, fake_host,
                                                        django_capture_on_commit_callbacks):
    a, _ = install(site, django_capture_on_commit_callbacks, name="mon-a")
    b, _ = install(site, django_capture_on_commit_callbacks, name="mon-b")
    fake_host["domains"] = [sample(a, 1), sample(b, 1)]
    result = host_collect(host=site.host, now=1_700_000_000)
    assert fake_host["bulk_calls"] == 1 and fake_host["loop_calls"] == 0
    assert result == {"domains": 2, "vms": 2}
    assert rrd_store().exists("vm", vm_key(a)) and rrd_store().exists("vm", vm_key(b))
    assert rrd_store().exists("host", str(site.host.pk))


def test_first_sample_is_unknown_then_rates_come_from_deltas(
        site, fake_host, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    t0 = RECENT
    fake_host["domains"] = [sample(vm, cpu_s=10, rd=0, rx=0)]
    host_collect(host=site.host, now=t0)
    fake_host["domains"] = [sample(vm, cpu_s=10 + 150, rd=300 * 1000, rx=300 * 50)]
    host_collect(host=site.host, now=t0 + 300)
    # One row per collection in the day's archive.
    series = rrd_store().fetch("vm", vm_key(vm), "day")
    rows = [dict(zip(series.metrics, row, strict=True)) for row in series.rows]
    known = [r for r in rows if r["cpu"] is not None]
    assert len(known) == 1
    assert known[0]["cpu"] == pytest.approx(50.0)
    assert known[0]["disk_read"] == pytest.approx(1000.0)
    assert known[0]["net_rx"] == pytest.approx(50.0)
    assert known[0]["memory"] == pytest.approx(GIB / 2)


def test_a_counter_reset_gives_no_spike(site, fake_host, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    t0 = RECENT
    for i, cpu in enumerate((100, 200, 5)):  # the VM restarted before the third sample
        fake_host["domains"] = [sample(vm, cpu_s=cpu, rd=cpu * 10)]
        host_collect(host=site.host, now=t0 + 300 * i)
    series = rrd_store().fetch("vm", vm_key(vm), "day")
    cpu = [v for v in series.column("cpu") if v is not None]
    assert cpu == [pytest.approx(100 / 3)]
    assert max(v for v in series.column("disk_read") if v is not None) < 1000


def test_domains_that_are_not_the_portals_are_skipped(site, fake_host,
                                                      django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    stranger = dataclasses.replace(sample(vm, 1), name="stranger", uuid="0" * 32)
    impostor = dataclasses.replace(sample(vm, 1), uuid="1" * 32)
    fake_host["domains"] = [stranger, impostor]
    assert host_collect(host=site.host, now=1_700_000_000)["vms"] == 0
    assert not rrd_store().exists("vm", vm_key(vm))
    assert set(LastSample.objects.values_list("key", flat=True)) == {f"host:{site.host.pk}"}


def test_a_deleted_vms_history_is_archived(site, fake_host, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    fake_host["domains"] = [sample(vm, 1)]
    host_collect(host=site.host, now=1_700_000_000)
    path = rrd_store().path_for("vm", vm_key(vm))
    assert path.exists()
    act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert not path.exists()
    archived = list((rrd_store().directory / "archive").glob(f"vm-{vm_key(vm)}-*.rrd"))
    assert len(archived) == 1
    assert not LastSample.objects.filter(key=f"vm:{vm_key(vm)}").exists()


def test_collection_on_the_test_driver_stores_unknowns_not_zeros(
        site, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(collector, "_host_io", lambda host: None)
    vm, _ = install(site, django_capture_on_commit_callbacks)
    host_collect(host=site.host, now=1_700_000_000)
    host_collect(host=site.host, now=1_700_000_300)
    series = rrd_store().fetch("vm", vm_key(vm), "hour")
    assert series.column("cpu") and all(v is None for v in series.column("cpu"))


def test_the_schedule_enqueues_one_task_per_active_host(site, monkeypatch):
    from hosts.models import HostStatus
    from monitoring import tasks
    from tests import factories as f

    f.HostFactory(name="down", uri="test:///down", status=HostStatus.DOWN)
    f.HostFactory(name="unread", uri="test:///unread", accel="")
    sent = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **k: sent.append(a))
    assert tasks.collect_all() == 1
    assert sent == [("monitoring.tasks.collect_host", site.host.pk)]

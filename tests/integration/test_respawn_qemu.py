"""Hypervisor tier: a VM of a second host that died is respawned on this machine's libvirtd.

The VM is installed by the portal on qemu:///system (`test_portal_qemu.real_site`) and
migrated live to the second host (`second_host`), which sees the same datastore folder
(shared). Then the second host dies: its libvirtd is killed, and the test kills its qemu
processes itself (those of its network namespace), which is how an administrator makes sure
a host with no power method is off. The health check marks it down; the admin confirms it is
off and asks for the respawn: the VM runs again here, from the same disk file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.health_check import host_health_check
from hosts.models import Host, HostStatus
from hosts.virt import Hypervisor, close_all, get_connection
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.second_host import SecondHost, second_host  # noqa: F401
from tests.integration.test_portal_qemu import install, real_site, suffix, virsh  # noqa: F401
from vms.models import VMState
from vms.services.migration import vm_migrate_request
from vms.services.respawn import host_respawn_request

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


@pytest.fixture
def two_hosts(real_site, second_host: SecondHost) -> Iterator:  # noqa: F811
    """Register the second host beside the site's, seeing its datastore (shared)."""
    site = real_site
    one = site.host
    hv2 = Host.objects.create(name="hv2", uri=second_host.uri, address=second_host.address,
                              accel=one.accel, cpu_mode=one.cpu_mode, vcpus=one.vcpus,
                              memory_mib=one.memory_mib,
                              memory_reserved_mib=one.memory_reserved_mib)
    site.datastore.shared = True
    site.datastore.save()
    site.datastore.hosts.add(hv2)
    network = site.vlan.network_name
    Hypervisor(second_host.uri).ensure_network(
        get_connection("qemu:///system").networkLookupByName(network).XMLDesc(0))
    yield site, hv2
    close_all()  # the second host is gone; the module's fixture removes what is left of it


def _disk_of(xml: str) -> str:
    source = ET.fromstring(xml).find("./devices/disk[@device='disk']/source")  # noqa: S314
    assert source is not None
    return source.get("file")


def _qemu_pids(netns: str) -> list[int]:
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True,
                          check=False, timeout=30).stdout.split()
    found = []
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu"):
            found.append(int(pid))
    return found


def _kill_the_second_host(host: SecondHost) -> None:
    """Kill its libvirtd (it dies, it does not stop), then its guests: the host is off."""
    pid = int((host.root / "run/libvirtd.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    guests = _qemu_pids(host.netns)
    assert guests, "the VM's qemu should run in the second host's namespace"
    for guest in guests:
        os.kill(guest, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _qemu_pids(host.netns) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _qemu_pids(host.netns)
    close_all()


def test_respawn_after_the_second_hosts_libvirtd_is_killed_and_the_host_fenced(
        two_hosts, second_host: SecondHost, settings,  # noqa: F811
        django_capture_on_commit_callbacks):
    site, hv2 = two_hosts
    capture = django_capture_on_commit_callbacks
    vm, op = install(site, capture, f"pt-{suffix()}")
    assert op.status == OperationStatus.SUCCEEDED, op.message
    with capture(execute=False):
        op = vm_migrate_request(vm=vm, actor=site.admin, destination=hv2)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    vm.refresh_from_db()
    assert vm.host == hv2 and vm.state == VMState.RUNNING
    disk = _disk_of(Hypervisor(hv2.uri).domain_xml(vm.domain_name))
    assert Path(disk).parent == Path(site.datastore.path)

    _kill_the_second_host(second_host)
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "FAILS_BEFORE_DOWN": 1,
                                   "REACH_TIMEOUT": 2.0}
    hv2 = host_health_check(hv2)
    assert hv2.status == HostStatus.DOWN and hv2.down_by_check, hv2.health_checks

    with capture(execute=False):
        op = host_respawn_request(host=hv2, actor=site.admin, off_confirmed=True)
    assert op.kind == OperationKind.HOST_RESPAWN
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert "adm confirmed it is powered off" in op.message
    assert f"Respawned 1 VM(s): {vm.name} on {site.host.name} (started" in op.message

    vm.refresh_from_db()
    assert vm.host == site.host and vm.state == VMState.RUNNING and vm.attention == ""
    assert virsh("domstate", vm.domain_name).stdout.strip() == "running"
    here = Hypervisor("qemu:///system")
    xml = here.domain_xml(vm.domain_name)
    assert _disk_of(xml) == disk and Path(disk).exists()
    assert f"port='{vm.vnc_port}'" in xml
    mac = vm.private_ip.mac
    assert mac in {m for m, _ip, _name in here.network_dhcp_hosts(site.vlan.network_name)}

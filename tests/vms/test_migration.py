"""Migrating a VM between two test-driver hosts: choices, refusals, scope, cold moves, undo.

libvirt's test driver cannot migrate a running domain, so a live move fails here (which
shows the undo); a stopped VM moves by redefinition, which the test driver does.
"""

from __future__ import annotations

import pytest

from core.errors import PortalError
from hosts.models import Host
from hosts.virt import Hypervisor
from hosts.vnc import vnc_port_allocate
from networking.models import PrivateIP
from operations.models import OperationKind, OperationStatus
from operations.requests import operation_retry_refusal
from operations.runner import operation_run
from tests import factories as f
from tests.virt_host import write_node_file
from tests.vms.test_lifecycle import act, approved_vm, install, run_pending
from vms.models import VirtualMachine, VMState
from vms.services.migration import vm_migrate_cancel, vm_migrate_request
from vms.services.snapshots import snapshot_take

pytestmark = pytest.mark.django_db
URI = "test:///default"
DEFAULT_NETWORK_XML = (
    "<network><name>default</name><bridge name='virbr0'/>"
    "<ip address='192.168.122.1' netmask='255.255.255.0'>"
    "<dhcp><range start='192.168.122.2' end='192.168.122.99'/></dhcp></ip></network>")


@pytest.fixture
def second(site, tmp_path) -> Host:
    """A second test-driver host seeing the site's datastore, with its network."""
    uri = write_node_file(tmp_path / "hv2.xml")
    host = f.HostFactory(name="hv2", uri=uri)
    site.datastore.hosts.add(host)
    Hypervisor(uri).ensure_network(DEFAULT_NETWORK_XML)
    return host


def ask(vm, actor, capture, **kw):
    with capture(execute=False):
        return vm_migrate_request(vm=vm, actor=actor, **kw)


def stopped(site, capture, name="lab1"):
    vm, op = install(site, capture, name=name)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    act(vm, OperationKind.DESTROY, site.admin, capture)
    assert vm.state == VMState.SHUTOFF
    site.datastore.shared = True
    site.datastore.save()
    return vm


def macs_on(uri):
    return {mac for mac, _ip, _name in Hypervisor(uri).network_dhcp_hosts("default")}


def test_best_fit_is_the_other_host_with_room(site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    op = ask(vm, site.admin, django_capture_on_commit_callbacks)
    assert op.kind == OperationKind.MIGRATE and op.host == second
    assert op.arguments == {"source": site.host.pk, "destination": second.pk}


def test_no_host_with_room_is_refused_with_what_each_has(site, second,
                                                         django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    Host.objects.filter(pk=second.pk).update(memory_mib=1024 + 256)
    with pytest.raises(PortalError, match=r"lab1 cannot move to another host: No host has 1 "
                                          r"vCPUs and 512 MiB.*hv2 has 8 vCPUs and 256 MiB"):
        ask(vm, site.admin, django_capture_on_commit_callbacks)
    assert not vm.operations.filter(kind=OperationKind.MIGRATE).exists()


def test_a_host_chosen_without_room_is_refused(site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    Host.objects.filter(pk=second.pk).update(vcpus=0)
    with pytest.raises(PortalError, match="lab1 cannot move to hv2: No host has 1 vCPUs"):
        ask(vm, site.admin, django_capture_on_commit_callbacks, destination=second)


def test_the_vms_own_host_is_no_destination(site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="already runs on hv1"):
        ask(vm, site.admin, django_capture_on_commit_callbacks, destination=site.host)


def test_only_admins_may_migrate(site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    for user in (site.orgadmin, site.faculty, site.student):
        with pytest.raises(PortalError, match="You may not migrate lab1"):
            ask(vm, user, django_capture_on_commit_callbacks)


def test_a_stopped_vm_on_a_datastore_only_its_host_sees_moves_with_its_disks(
        site, second, django_capture_on_commit_callbacks):
    vm = stopped(site, django_capture_on_commit_callbacks)
    site.datastore.shared = False
    site.datastore.save()
    pool, here, there = site.datastore.pool_name, Hypervisor(URI), Hypervisor(second.uri)
    assert here.volume_exists(pool, vm.volume_name)
    op = operation_run(operation_id=ask(vm, site.admin, django_capture_on_commit_callbacks).pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    assert op.steps == []
    vm.refresh_from_db()
    assert vm.host == second
    # The disk (and the template's image it is built on) were copied; the disk left hv1.
    assert there.volume_exists(pool, vm.volume_name)
    assert not here.volume_exists(pool, vm.volume_name)
    base = vm.template.image_path.rpartition("/")[2]
    assert there.volume_exists(pool, base) and here.volume_exists(pool, base)


def test_a_migration_holds_the_vm_and_its_destination(site, second,
                                                      django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    on_second = placed(site, django_capture_on_commit_callbacks, "lab2", second)
    ask(vm, site.admin, django_capture_on_commit_callbacks, destination=second)
    # The VM itself, a VM on the destination, and another move to it all wait.
    with pytest.raises(PortalError, match="Another operation on lab1"):
        act(vm, OperationKind.REBOOT, site.admin, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="Another operation on lab2"):
        act(on_second, OperationKind.REBOOT, site.admin, django_capture_on_commit_callbacks)
    third = placed(site, django_capture_on_commit_callbacks, "lab3", site.host)
    with pytest.raises(PortalError, match="Another operation on hv2"):
        ask(third, site.admin, django_capture_on_commit_callbacks, destination=second)


def placed(site, capture, name, host):
    """Return a VM recorded as running on host (no domain: only the database is asked)."""
    vm = approved_vm(site, capture, name=name)
    vm.operations.all().delete()
    VirtualMachine.objects.filter(pk=vm.pk).update(host=host, datastore=site.datastore,
                                                   state=VMState.RUNNING)
    vm.refresh_from_db()
    return vm


def test_a_stopped_vm_moves_with_its_snapshots_port_and_dhcp_entry(
        site, second, django_capture_on_commit_callbacks):
    vm = stopped(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        snap = snapshot_take(vm=vm, actor=site.admin, name="before")
    run_pending(vm)
    snap.refresh_from_db()
    mac = PrivateIP.objects.get(vm=vm).mac
    # A domain on hv2 that the database does not know holds the first port there.
    Hypervisor(second.uri).define_domain(_stray())
    op = ask(vm, site.admin, django_capture_on_commit_callbacks)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    vm.refresh_from_db()
    assert vm.host == second and vm.state == VMState.SHUTOFF
    assert vm.vnc_port == 5901
    assert "moved while shut off from hv1 to hv2" in op.message
    assert Hypervisor(URI).find_domain(vm.domain_name) is None
    dest = Hypervisor(second.uri)
    assert dest.snapshot_names(vm.domain_name) == [snap.libvirt_name]
    assert dest.snapshot_metadata(vm.domain_name).current == snap.libvirt_name
    assert "port='5901'" in dest.domain_xml(vm.domain_name)
    assert mac in macs_on(second.uri) and mac not in macs_on(URI)


def _stray():
    from tests.virt_host import domain_xml, with_vnc

    xml = domain_xml("stray", memory_mib=64, vcpus=1, disk="/tmp/stray.img",
                     mac="52:54:00:99:00:01")
    return with_vnc(xml, 5900)


def test_a_destination_without_the_network_leaves_the_vm_where_it_was(
        site, second, django_capture_on_commit_callbacks):
    vm = stopped(site, django_capture_on_commit_callbacks)
    port = vm.vnc_port
    _network_remove(second.uri)
    op = operation_run(operation_id=ask(vm, site.admin, django_capture_on_commit_callbacks).pk)
    assert op.status == OperationStatus.FAILED
    assert "network 'default'" in op.detail
    vm.refresh_from_db()
    assert vm.host == site.host and vm.vnc_port == port
    assert Hypervisor(URI).find_domain(vm.domain_name) is not None
    assert Hypervisor(second.uri).find_domain(vm.domain_name) is None
    assert "vnc_port" not in op.arguments


def test_a_failed_live_move_gives_back_the_destinations_port_and_dhcp_entry(
        site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    site.datastore.shared = True
    site.datastore.save()
    mac = PrivateIP.objects.get(vm=vm).mac
    # The test driver cannot migrate a running domain: the move itself fails.
    op = operation_run(operation_id=ask(vm, site.admin, django_capture_on_commit_callbacks).pk)
    assert op.status == OperationStatus.FAILED
    assert "cannot migrate domain" in op.detail
    vm.refresh_from_db()
    assert vm.host == site.host and vm.state == VMState.RUNNING
    assert Hypervisor(URI).domain(vm.domain_name).state == "running"
    assert Hypervisor(second.uri).find_domain(vm.domain_name) is None
    assert mac not in macs_on(second.uri) and mac in macs_on(URI)
    # Its port on hv2 is free again for an install there.
    other = placed(site, django_capture_on_commit_callbacks, "lab2", second)
    assert vnc_port_allocate(vm=other) == 5900


def test_an_install_skips_the_port_a_migration_holds(site, second,
                                                     django_capture_on_commit_callbacks):
    from hosts.vnc import vnc_port_reserve

    vm, iop = install(site, django_capture_on_commit_callbacks)
    assert iop.status == OperationStatus.SUCCEEDED, (iop.message, iop.detail)
    op = ask(vm, site.admin, django_capture_on_commit_callbacks)
    assert vnc_port_reserve(operation=op, vm=vm, host=second) == 5900
    other = placed(site, django_capture_on_commit_callbacks, "lab2", second)
    assert vnc_port_allocate(vm=other) == 5901


def test_a_cancelled_migration_leaves_the_vm_and_says_who(site, second,
                                                          django_capture_on_commit_callbacks):
    vm = stopped(site, django_capture_on_commit_callbacks)
    op = ask(vm, site.admin, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="You may not migrate"):
        vm_migrate_cancel(operation=op, actor=site.orgadmin)
    vm_migrate_cancel(operation=op, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.FAILED and op.routine
    assert op.message == "The migration of lab1 was cancelled by adm; it stays on hv1."
    vm.refresh_from_db()
    assert vm.host == site.host
    assert Hypervisor(second.uri).find_domain(vm.domain_name) is None
    with pytest.raises(PortalError, match="already ended"):
        vm_migrate_cancel(operation=op, actor=site.admin)
    assert operation_retry_refusal(op) == ("A cancelled migration is not retried; ask for a "
                                           "new one from the VM's page.")


def _network_remove(uri):
    from hosts.virt import get_connection

    net = get_connection(uri).networkLookupByName("default")
    net.destroy()
    net.undefine()


def test_a_live_move_from_another_machine_to_a_host_without_address_is_refused(
        site, second, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    site.datastore.shared = True
    site.datastore.save()
    # The VM's host is another machine, the destination (hv2) is known by a local URI alone.
    Host.objects.filter(pk=site.host.pk).update(uri="qemu+tcp://192.0.2.7/system")
    vm.refresh_from_db()
    with pytest.raises(PortalError, match="Host hv2 has no address, so hv1 cannot send"):
        ask(vm, site.admin, django_capture_on_commit_callbacks, destination=second)
    assert not vm.operations.filter(kind=OperationKind.MIGRATE).exists()
    # With its address set, the move is asked for.
    Host.objects.filter(pk=second.pk).update(address="192.0.2.8")
    second.refresh_from_db()
    op = ask(vm, site.admin, django_capture_on_commit_callbacks, destination=second)
    assert op.kind == OperationKind.MIGRATE and op.host_id == second.pk

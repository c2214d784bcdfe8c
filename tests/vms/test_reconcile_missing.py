"""VMs whose domain went missing: recreated from their disk, or marked lost."""

from __future__ import annotations

import pytest
from django.core import mail

from core.errors import PortalError
from hosts.virt import Hypervisor
from networking.models import PrivateIP
from operations.models import OperationStatus
from operations.runner import operation_run
from tests.vms.faults_helpers import install
from vms.models import VirtualMachine, VMState
from vms.services.missing import vm_lost_request, vm_recreate_request
from vms.services.reconcile import host_reconcile

pytestmark = pytest.mark.django_db


def _vanished(site, capture):
    """Install a VM, then lose its domain behind the portal's back (its disk stays)."""
    vm, _ = install(site, capture)
    hv = Hypervisor(site.host.uri)
    hv.undefine_domain(vm.domain_name)
    host_reconcile(host=site.host)
    vm.refresh_from_db()
    assert vm.state == VMState.UNKNOWN
    return vm, hv


def _run(capture, ask):
    with capture(execute=False):
        op = ask()
    return operation_run(operation_id=op.pk)


def test_recreating_a_missing_vm_defines_it_again_on_its_disk_and_starts_it(
        site, django_capture_on_commit_callbacks):
    vm, hv = _vanished(site, django_capture_on_commit_callbacks)
    port, ip = vm.vnc_port, vm.private_ip
    op = _run(django_capture_on_commit_callbacks,
              lambda: vm_recreate_request(vm=vm, actor=site.admin, start=True))
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm.refresh_from_db()
    assert vm.state == VMState.RUNNING and vm.vnc_port == port and vm.private_ip == ip
    from hosts.virt.domain_xml import parse_domain_xml

    parsed = parse_domain_xml(hv.domain_xml(vm.domain_name))
    assert parsed.disk_paths[0] == f"{site.datastore.path}/{vm.volume_name}"
    assert parsed.macs == [ip.mac] and parsed.uuid == str(vm.uuid)
    site.host.refresh_from_db()
    assert vm.name not in site.host.missing_domains


def test_recreating_is_refused_with_the_reason_when_the_disk_is_gone(
        site, django_capture_on_commit_callbacks):
    vm, hv = _vanished(site, django_capture_on_commit_callbacks)
    hv.delete_volume(site.datastore.pool_name, vm.volume_name)
    op = _run(django_capture_on_commit_callbacks,
              lambda: vm_recreate_request(vm=vm, actor=site.admin, start=True))
    assert op.status == OperationStatus.FAILED
    assert "is gone from datastore" in op.message and "Mark it lost" in op.message
    assert hv.find_domain(vm.domain_name) is None


def test_marking_a_missing_vm_lost_gives_back_its_addresses_and_tells_its_owner(
        site, django_capture_on_commit_callbacks):
    vm, _ = _vanished(site, django_capture_on_commit_callbacks)
    address = vm.private_ip.address
    with django_capture_on_commit_callbacks(execute=True):
        op = _run(django_capture_on_commit_callbacks,
                  lambda: vm_lost_request(vm=vm, actor=site.admin))
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm.refresh_from_db()
    assert vm.state == VMState.DELETED and vm.vnc_port is None and vm.deleted_at
    assert PrivateIP.objects.get(address=address).vm is None
    assert [m.to for m in mail.outbox if "was lost" in m.subject] == [[site.student.email]]
    assert vm.name.encode() not in site.client(site.student).get("/vms/").content


def test_only_admins_and_only_for_a_vm_the_reconcile_found_missing(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="while it is running"):
        vm_lost_request(vm=vm, actor=site.admin)
    # Unknown, but the last reconcile did not report its domain missing.
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.UNKNOWN)
    with pytest.raises(PortalError, match="did not find"):
        vm_lost_request(vm=VirtualMachine.objects.get(pk=vm.pk), actor=site.admin)
    with pytest.raises(PortalError, match="may not"):
        vm_recreate_request(vm=VirtualMachine.objects.get(pk=vm.pk), actor=site.student,
                            start=False)

"""Forwarded SSH ports: the request -> operation -> release cycle, and delete, move and resync."""

from __future__ import annotations

import pytest

from core.errors import PortalError
from networking.models import PublicIP, SSHPort
from operations.models import OperationKind, OperationStatus
from operations.requests import operation_create
from operations.runner import operation_run
from tests import factories as f
from tests.networking.ssh_port_helpers import BOX, ask, forwards
from tests.networking.test_allocation import make_vms
from tests.vms.test_lifecycle import act, install, run_pending
from vms.models import RequestKind, VirtualMachine
from vms.services.workflow import vm_change_request_create, vm_request_approve

# ---- requests, operations, release, delete, move, resync ----

@pytest.mark.django_db
def test_a_request_climbs_the_chain_and_the_operation_records_and_applies_the_port(
        site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    req = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.SSH_PORT,
                                   purpose="ssh from home", faculty=site.faculty)
    assert req.stage == "faculty" and req.summary == f"Forward an SSH port to {vm.name}"
    with django_capture_on_commit_callbacks(execute=False):
        req = vm_request_approve(request=req, actor=site.faculty)
        req = vm_request_approve(request=req, actor=site.orgadmin)
        assert not vm.operations.filter(status="queued").exists()
        req = vm_request_approve(request=req, actor=site.admin)
    assert vm.operations.get(status="queued").kind == OperationKind.SSH_PORT_ATTACH
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    row = SSHPort.objects.get(vm=vm)
    ip = vm.private_ip.address
    assert (row.address, row.port, row.private_address) == (BOX, 10000, ip) and row.applied_at
    assert op.message == f"{vm.name} answers SSH on {BOX} port 10000 (forwarded to {ip} port 22)."
    assert forwards(box.rules) == {("dnat", BOX, 10000, ip)}


@pytest.mark.django_db
def test_release_removes_the_forward_and_gives_the_port_back(
        site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    op = act(vm, OperationKind.SSH_PORT_RELEASE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert box.rules == set()
    assert not SSHPort.objects.filter(vm__isnull=False).exists()
    assert SSHPort.objects.get(port=10000).private_address is None


@pytest.mark.django_db
def test_deleting_the_vm_gives_its_port_back(site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    op = act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert box.rules == set() and not SSHPort.objects.filter(vm__isnull=False).exists()
    other, _ = install(site, django_capture_on_commit_callbacks, name="lab2")
    _, op = ask(site, other, django_capture_on_commit_callbacks)
    assert SSHPort.objects.get(vm=other).port == 10000


@pytest.mark.django_db
def test_moving_the_vm_points_its_port_at_the_new_address(
        site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    old = vm.private_ip.address
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.NETWORK,
                                   purpose="move", security_domain=site.domain2)
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm = VirtualMachine.objects.get(pk=vm.pk)
    new = vm.private_ip.address
    assert new != old and new.startswith("10.20.0.")
    row = SSHPort.objects.get(vm=vm)
    assert (row.port, row.private_address) == (10000, new)
    assert box.rules == {("dnat", BOX, 10000, new), ("accept", new)}


@pytest.mark.django_db
def test_a_move_whose_forward_fails_leaves_the_port_on_the_old_address(
        site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    old = vm.private_ip.address
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    box.fail_forward_to = "10.20.0.100"  # the first address of the other VLAN's pool
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.NETWORK,
                                   purpose="move", security_domain=site.domain2)
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    op = run_pending(vm)
    assert op.status == OperationStatus.FAILED
    vm = VirtualMachine.objects.get(pk=vm.pk)
    assert vm.private_ip.address == old and vm.security_domain == site.domain
    assert SSHPort.objects.get(vm=vm).private_address == old
    assert box.rules == {("dnat", BOX, 10000, old), ("accept", old)}


@pytest.mark.django_db
def test_resync_clears_the_box_and_applies_mappings_and_ports_again(
        site, django_capture_on_commit_callbacks, box):
    f.make_public_pool(1)
    a, _ = install(site, django_capture_on_commit_callbacks, name="pub-a", public_ip=True)
    b, _ = install(site, django_capture_on_commit_callbacks, name="ssh-b")
    ask(site, b, django_capture_on_commit_callbacks)
    box.rules = {("dnat", BOX, 10999, "10.9.9.9")}  # stale, from before
    box.calls = []
    with django_capture_on_commit_callbacks(execute=False):
        op = operation_create(kind=OperationKind.NAT_RESYNC, requested_by=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED and "2 mapping" in op.message
    assert box.calls[0] == ("clear",)
    ip_a, ip_b = a.private_ip.address, b.private_ip.address
    assert box.rules == {("map", PublicIP.objects.get(vm=a).address, ip_a),
                         ("dnat", BOX, 10000, ip_b), ("accept", ip_b)}


@pytest.mark.django_db
def test_a_forward_that_fails_half_way_is_undone_and_told_plainly(
        site, django_capture_on_commit_callbacks, box):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    box.fail_forward_to = vm.private_ip.address
    _, op = ask(site, vm, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "iptables" not in op.message and "FORWARD" not in op.message  # the owner's words
    assert "could not be given an SSH port: the NAT box did not take" in op.message
    assert "Chain 'FORWARD' does not exist" in op.detail  # the box's own, for admins
    assert box.rules == set()  # the DNAT rule that went in was taken out again
    assert not SSHPort.objects.filter(vm__isnull=False).exists()
    box.fail_forward_to = None
    op.refresh_from_db()
    from operations.requests import operation_retry

    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert SSHPort.objects.get(vm=vm).port == 10000


@pytest.mark.django_db
def test_an_exhausted_range_fails_the_operation_clearly(
        site, django_capture_on_commit_callbacks, box, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "10000-10000"}
    a, _ = install(site, django_capture_on_commit_callbacks, name="one")
    b, _ = install(site, django_capture_on_commit_callbacks, name="two")
    ask(site, a, django_capture_on_commit_callbacks)
    _, op = ask(site, b, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and "No free SSH port" in op.message
    assert not SSHPort.objects.filter(vm=b).exists()


@pytest.mark.django_db
def test_a_port_is_refused_with_a_public_ip_a_port_already_or_no_private_ip(
        site, django_capture_on_commit_callbacks, box, settings):
    f.make_public_pool(1)
    pub, _ = install(site, django_capture_on_commit_callbacks, name="pub", public_ip=True)
    with pytest.raises(PortalError, match="has a public IP"):
        vm_change_request_create(requester=site.admin, vm=pub, kind=RequestKind.SSH_PORT,
                                 purpose="x")
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ask(site, vm, django_capture_on_commit_callbacks)
    with pytest.raises(PortalError, match="already has a forwarded SSH port"):
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.SSH_PORT,
                                 purpose="x")
    bare = make_vms(site, 1)[0]
    VirtualMachine.objects.filter(pk=bare.pk).update(state="running")
    bare.refresh_from_db()
    with pytest.raises(PortalError, match="no private IP"):
        vm_change_request_create(requester=site.admin, vm=bare, kind=RequestKind.SSH_PORT,
                                 purpose="x")
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": "", "ADDRESS": ""}
    other, _ = install(site, django_capture_on_commit_callbacks, name="other")
    with pytest.raises(PortalError, match="forwards no SSH ports"):
        vm_change_request_create(requester=site.admin, vm=other, kind=RequestKind.SSH_PORT,
                                 purpose="x")


@pytest.mark.django_db
def test_a_public_ip_given_after_the_request_makes_the_approval_refuse(
        site, django_capture_on_commit_callbacks, box):
    f.make_public_pool(1)
    vm, _ = install(site, django_capture_on_commit_callbacks)
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.SSH_PORT,
                                   purpose="x")
    PublicIP.objects.update(vm=vm)
    with django_capture_on_commit_callbacks(execute=False), \
            pytest.raises(PortalError, match="has a public IP"):
        vm_request_approve(request=req, actor=site.another_admin())
    req.refresh_from_db()
    assert req.stage == "admin" and not vm.operations.filter(status="queued").exists()

"""Hypervisor tier: maintenance evacuates a host with three VMs to a second libvirtd.

The VMs are installed by the portal on qemu:///system (`test_portal_qemu.real_site`) while
the second host takes none; then the host enters maintenance and its evacuation runs: the two
running VMs move live, the shut off one (its datastore shared) by redefinition. The children
run in the parent's thread here (EVACUATE_PARALLEL=1): threads do not see a test's
transaction; bench/evacuation.py measures the parallel runs.
"""

from __future__ import annotations

import pytest

from hosts.models import Host, HostStatus
from hosts.virt import Hypervisor
from operations.models import OperationKind, OperationStatus
from operations.runner import operation_run
from tests.integration.second_host import second_host  # noqa: F401
from tests.integration.test_migration_portal_qemu import two_hosts  # noqa: F401
from tests.integration.test_portal_qemu import act, install, real_site, suffix  # noqa: F401
from vms.models import VMState
from vms.services.evacuation import evacuation_request

pytestmark = [pytest.mark.hypervisor, pytest.mark.django_db]


def test_maintenance_evacuates_a_host_with_three_vms(two_hosts, settings,  # noqa: F811
                                                     django_capture_on_commit_callbacks):
    settings.PORTAL = {**settings.PORTAL, "EVACUATE_PARALLEL": 1}
    site, hv2, there = two_hosts
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.DOWN)  # installs go to hv1
    # Three one-vCPU VMs on a two-core machine: give each host room for them.
    Host.objects.filter(pk__in=[site.host.pk, hv2.pk]).update(cpu_overcommit=4)
    vms = []
    for _ in range(3):
        vm, op = install(site, django_capture_on_commit_callbacks, f"ev-{suffix()}")
        assert op.status == OperationStatus.SUCCEEDED, op.message
        vms.append(vm)
    assert act(vms[2], OperationKind.DESTROY, site,
               django_capture_on_commit_callbacks).status == OperationStatus.SUCCEEDED
    assert [vm.state for vm in vms] == [VMState.RUNNING, VMState.RUNNING, VMState.SHUTOFF]
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.UP)
    Host.objects.filter(pk=site.host.pk).update(status=HostStatus.MAINTENANCE)
    site.host.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        parent = evacuation_request(host=site.host, actor=site.admin)
    parent = operation_run(operation_id=parent.pk)
    assert parent.status == OperationStatus.SUCCEEDED, (parent.message, [
        (c.vm.name, c.message, c.detail) for c in parent.children.all()])
    assert parent.message == f"All 3 VMs moved off {site.host.name}."
    children = list(parent.children.all())
    assert len(children) == 3
    assert all((c.kind, c.status, c.parent_id, c.host_id) == (
        OperationKind.MIGRATE, OperationStatus.SUCCEEDED, parent.pk, hv2.pk) for c in children)
    here = Hypervisor("qemu:///system")
    for vm, state in zip(vms, ("running", "running", "shutoff"), strict=True):
        vm.refresh_from_db()
        assert vm.host == hv2
        assert there.domain(vm.domain_name).state == state
        assert here.find_domain(vm.domain_name) is None

"""Install, power actions and deletion on libvirt's test driver, with failure clean-up."""

from __future__ import annotations

import pytest

from core.errors import PortalError
from hosts.virt import Hypervisor, VirtError
from networking.models import NATMapping, PrivateIP, PublicIP
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests import factories as f
from vms.models import VirtualMachine, VMState
from vms.services import lifecycle, steps
from vms.services.workflow import vm_request_approve, vm_request_create

pytestmark = pytest.mark.django_db
URI = "test:///default"


def approved_vm(site, django_capture_on_commit_callbacks, name="lab1", **sizes):
    req = vm_request_create(
        requester=site.admin, name=name, template=site.template, vcpus=sizes.get("vcpus", 1),
        memory_mib=sizes.get("memory_mib", 512), disk_gib=sizes.get("disk_gib", 2),
        purpose="Lab <b>&</b> tests", security_domain=site.domain,
        public_ip=sizes.get("public_ip", False),
    )
    with django_capture_on_commit_callbacks(execute=False):
        vm_request_approve(request=req, actor=site.another_admin())
    return VirtualMachine.objects.get(request=req)


def run_pending(vm):
    op = vm.operations.filter(status=OperationStatus.QUEUED).get()
    return operation_run(operation_id=op.pk)


def install(site, capture, **kw):
    vm = approved_vm(site, capture, **kw)
    op = run_pending(vm)
    vm.refresh_from_db()
    return vm, op


def act(vm, kind, actor, capture):
    with capture(execute=False):
        lifecycle.vm_action_request(vm=vm, kind=kind, actor=actor)
    op = run_pending(vm)
    vm.refresh_from_db()
    return op


def nothing_left(site, vm):
    hv = Hypervisor(URI)
    assert hv.find_domain(vm.domain_name) is None
    pool = site.datastore.pool_name
    assert not (vm.volume_name in hv.list_volumes(pool) if _pool_exists(hv, pool) else False)
    assert not PrivateIP.objects.filter(vm=vm).exists()
    assert not PublicIP.objects.filter(vm=vm).exists()
    assert not NATMapping.objects.filter(vm=vm).exists()
    vm.refresh_from_db()
    assert vm.vnc_port is None
    assert [h for h in hv.network_dhcp_hosts("default") if h[2] == vm.domain_name] == []


def _pool_exists(hv, pool):
    try:
        hv.list_volumes(pool)
    except VirtError:
        return False
    return True


def test_install_places_allocates_creates_disk_defines_and_starts(
        site, django_capture_on_commit_callbacks):
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.RUNNING
    assert vm.host == site.host and vm.datastore == site.datastore
    ip = PrivateIP.objects.get(vm=vm)
    assert ip.address in op.message and ip.mac in op.message
    hv = Hypervisor(URI)
    facts = hv.domain(vm.domain_name)
    assert facts.state == "running" and facts.uuid == str(vm.uuid)
    assert facts.vcpus == 1 and facts.memory_mib == 512
    xml = hv.domain_xml(vm.domain_name)
    assert ip.mac in xml and vm.volume_name in xml
    assert "Lab &lt;b&gt;&amp;&lt;/b&gt; tests" in xml
    assert vm.volume_name in hv.list_volumes(site.datastore.pool_name)
    img = hv.inspect_image(site.datastore.pool_name, vm.volume_name)
    assert img.format == "qcow2"
    assert img.backing_path == site.template.image_path
    assert img.capacity_bytes == 2 * 1024**3


@pytest.mark.parametrize("step", [
    "host_choose", "ip_allocate", "vnc_port_allocate", "ensure_pool", "inspect_image",
    "create_overlay", "ensure_network_active", "dhcp_add", "define_domain", "start",
    "nat_attach", "nat.apply",
])
def test_a_failure_at_any_install_step_gives_everything_back(
        site, django_capture_on_commit_callbacks, monkeypatch, step):
    from networking import nat

    def boom(*args, **kwargs):
        raise VirtError(f"injected failure in {step}")

    f.make_public_pool(2)
    if step in ("host_choose", "ip_allocate", "vnc_port_allocate", "dhcp_add", "nat_attach"):
        monkeypatch.setattr(steps, step, boom)
    elif step == "nat.apply":
        monkeypatch.setattr(nat.NullNat, "apply", boom)
    else:
        monkeypatch.setattr(Hypervisor, step, boom)
    vm, op = install(site, django_capture_on_commit_callbacks, public_ip=True)
    assert op.status == OperationStatus.FAILED
    assert op.detail == f"injected failure in {step}"
    assert "could not be installed and started" in op.message and "injected" not in op.message
    assert vm.state == VMState.FAILED
    assert vm.host is None and vm.datastore is None
    nothing_left(site, vm)
    assert PrivateIP.objects.filter(vm__isnull=False).count() == 0
    assert PublicIP.objects.filter(vm__isnull=False).count() == 0


def test_a_failed_install_succeeds_when_retried_after_the_cause_is_fixed(
        site, django_capture_on_commit_callbacks, monkeypatch):
    from operations.requests import operation_retry

    original = Hypervisor.start
    monkeypatch.setattr(Hypervisor, "start", lambda self, name: (_ for _ in ()).throw(
        VirtError("host refused")))
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    monkeypatch.setattr(Hypervisor, "start", original)
    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    vm.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED and op.attempts == 2
    assert vm.state == VMState.RUNNING


def test_an_exhausted_pool_fails_the_install_clearly_and_leaks_nothing(
        site, django_capture_on_commit_callbacks):
    PrivateIP.objects.update(vm=None)
    PrivateIP.objects.all().delete()
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "No free private IP" in op.message
    assert vm.host is None
    nothing_left(site, vm)


def test_no_host_with_room_fails_the_install_with_the_reason(
        site, django_capture_on_commit_callbacks):
    site.host.vcpus = 1
    site.host.save()
    vm, op = install(site, django_capture_on_commit_callbacks, vcpus=2)
    assert op.status == OperationStatus.FAILED
    assert "No host has 2 vCPUs" in op.message and "hv1 has 1 vCPUs" in op.message
    nothing_left(site, vm)


def test_placement_skips_full_hosts_and_hosts_without_the_datastore(
        site, django_capture_on_commit_callbacks):
    from tests import factories as f

    # Placement reads only the database; the chosen host must be the test driver's.
    site.host.uri = "test:///elsewhere"
    site.host.memory_mib = 4096
    site.host.save()
    f.HostFactory(name="hv-nostore", uri="test:///nostore", memory_mib=999999)
    full = f.HostFactory(name="hv-full", uri="test:///full", vcpus=0, memory_mib=999999)
    roomy = f.HostFactory(name="hv-roomy", uri="test:///default", memory_mib=32768)
    site.datastore.hosts.add(roomy, full)
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.host == roomy


def test_a_domain_of_the_same_name_not_ours_is_not_touched(
        site, django_capture_on_commit_callbacks):
    from hosts.virt.domain_xml import DomainSpec, build_domain_xml

    hv = Hypervisor(URI)
    hv.define_domain(build_domain_xml(DomainSpec(
        name="lab1", uuid="6f1c7c57-4d1b-4c8b-9f3e-0c4a8f0a1b2c", domain_type="test",
        vcpus=1, memory_mib=128, disk_path="/x.qcow2", mac="52:54:00:aa:bb:cc")))
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "already has another domain called lab1" in op.message
    assert hv.domain("lab1").uuid == "6f1c7c57-4d1b-4c8b-9f3e-0c4a8f0a1b2c"
    assert vm.volume_name not in hv.list_volumes(site.datastore.pool_name)


@pytest.mark.parametrize(("kind", "expected"), [
    (OperationKind.SUSPEND, VMState.PAUSED),
    (OperationKind.REBOOT, VMState.RUNNING),
    (OperationKind.SHUTDOWN, VMState.SHUTOFF),
    (OperationKind.DESTROY, VMState.SHUTOFF),
])
def test_power_actions_on_a_running_vm(site, django_capture_on_commit_callbacks, kind,
                                       expected):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    op = act(vm, kind, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == expected
    libvirt_state = Hypervisor(URI).domain(vm.domain_name).state
    assert {"paused": VMState.PAUSED, "running": VMState.RUNNING,
            "shutoff": VMState.SHUTOFF}[libvirt_state] == expected


def test_resume_and_start_bring_the_vm_back(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.SUSPEND, site.admin, django_capture_on_commit_callbacks)
    op = act(vm, OperationKind.RESUME, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED and vm.state == VMState.RUNNING
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    op = act(vm, OperationKind.START, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED and vm.state == VMState.RUNNING
    assert Hypervisor(URI).domain(vm.domain_name).state == "running"


@pytest.mark.parametrize(("kind", "state"), [
    (OperationKind.START, VMState.RUNNING),
    (OperationKind.RESUME, VMState.RUNNING),
    (OperationKind.SHUTDOWN, VMState.SHUTOFF),
    (OperationKind.SUSPEND, VMState.PAUSED),
    (OperationKind.REBOOT, VMState.SHUTOFF),
    (OperationKind.DELETE, VMState.DELETED),
])
def test_an_action_the_state_does_not_allow_is_refused(site, django_capture_on_commit_callbacks,
                                                       kind, state):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=state)
    vm.refresh_from_db()
    with pytest.raises(PortalError, match="Cannot"):
        lifecycle.vm_action_request(vm=vm, kind=kind, actor=site.admin)
    assert not vm.operations.filter(status=OperationStatus.QUEUED).exists()


def test_a_second_action_while_one_is_queued_is_refused(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.SUSPEND, actor=site.admin)
    with pytest.raises(PortalError, match="under way"):
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.REBOOT, actor=site.admin)
    assert vm.operations.filter(status=OperationStatus.QUEUED).count() == 1


def test_someone_elses_vm_cannot_be_acted_on(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    for who in (site.other_student, site.faculty, site.other_orgadmin):
        with pytest.raises(PortalError):
            lifecycle.vm_action_request(vm=vm, kind=OperationKind.SUSPEND, actor=who)
    assert vm.operations.count() == 1


def test_delete_undefines_removes_the_disk_and_releases_ip_and_mac(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    ip = PrivateIP.objects.get(vm=vm)
    op = act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert vm.state == VMState.DELETED and vm.deleted_at is not None
    nothing_left(site, vm)
    ip.refresh_from_db()
    assert ip.vm is None
    # The name and the address are free again.
    again = approved_vm(site, django_capture_on_commit_callbacks, name="lab1")
    assert operation_run(operation_id=again.operations.get().pk).status == "succeeded"


def test_delete_of_a_failed_install_marks_it_deleted(site, django_capture_on_commit_callbacks,
                                                     monkeypatch):
    monkeypatch.setattr(Hypervisor, "start", lambda self, n: (_ for _ in ()).throw(
        VirtError("no")))
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.undo()
    op = act(vm, OperationKind.DELETE, site.student if vm.owner == site.student else site.admin,
             django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED
    assert vm.state == VMState.DELETED


def test_delete_that_fails_on_the_host_keeps_the_vm_listed(
        site, django_capture_on_commit_callbacks, monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.setattr(Hypervisor, "undefine_domain", lambda self, n: (_ for _ in ()).throw(
        VirtError("host unreachable")))
    op = act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and "host unreachable" in op.detail
    assert vm.state == VMState.UNKNOWN
    assert PrivateIP.objects.filter(vm=vm).exists()


def test_a_failed_power_action_records_the_observed_state(
        site, django_capture_on_commit_callbacks, monkeypatch):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    monkeypatch.setattr(Hypervisor, "shutdown", lambda self, n, **kw: (_ for _ in ()).throw(
        VirtError("lab1 did not shut down within 120 s; use Force off")))
    op = act(vm, OperationKind.SHUTDOWN, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED and "use Force off" in op.message
    assert "120 s" in op.detail and "120 s" not in op.message
    assert vm.state == VMState.RUNNING


def test_operations_are_enqueued_only_after_commit(site, django_capture_on_commit_callbacks,
                                                   monkeypatch):
    sent = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: sent.append(a))
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    assert sent == []
    run_pending(vm)
    vm.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.vm_action_request(vm=vm, kind=OperationKind.DELETE, actor=site.admin)
    op = vm.operations.get(kind=OperationKind.DELETE)
    assert sent == [("operations.tasks.run_operation", op.pk)]
    assert Operation.objects.get(pk=op.pk).enqueued_at is not None


def test_a_template_image_with_a_backing_file_is_refused(site, django_capture_on_commit_callbacks):
    hv = Hypervisor(URI)
    pool = site.datastore.pool_name
    hv.delete_volume(pool, site.template.image)
    hv.create_overlay(pool, site.template.image, "/srv/elsewhere/base.qcow2", 1024**3)
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "has a backing file" in op.message
    nothing_left(site, vm)


def test_a_missing_template_image_is_refused(site, django_capture_on_commit_callbacks):
    Hypervisor(URI).delete_volume(site.datastore.pool_name, site.template.image)
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.FAILED
    assert "is not in datastore local" in op.message
    nothing_left(site, vm)

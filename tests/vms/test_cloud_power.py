"""Whole-cloud shutdown and bootup on libvirt's test driver: the record, resuming, refusals."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.errors import PortalError
from hosts.models import HostStatus, PowerMethod
from hosts.virt import Hypervisor
from operations.models import Operation, OperationKind, OperationStatus
from operations.runner import operation_run
from tests.vms.test_lifecycle import act, approved_vm, run_pending
from vms.models import CloudShutdown, CloudVMStage, Snapshot, VirtualMachine, VMState
from vms.services import cloud_power, lifecycle
from vms.services.cloud_power import cloud_bootup_request, cloud_shutdown_request

pytestmark = pytest.mark.django_db
URI = "test:///default"


@pytest.fixture
def quick(settings, monkeypatch):
    """Short waits, and a health check that passes (the test driver has no real host)."""
    settings.PORTAL = {**settings.PORTAL, "CLOUD_POLL": 0, "CLOUD_BOOT_WAIT": 0,
                       "CLOUD_VM_WAIT": 0}
    health = {"ok": True}

    def check(host):
        host.health_checked_at = host.health_checked_at or __import__(
            "django.utils.timezone", fromlist=["now"]).now()
        host.health_failures = 0 if health["ok"] else 1
        return host

    monkeypatch.setattr(cloud_power, "host_health_check", check)
    return health


def three_vms(site, capture):
    """Two running VMs and one shut off, on the site's host."""
    vms = []
    for name in ("web1", "web2", "idle1"):
        vm = approved_vm(site, capture, name=name)
        run_pending(vm)
        vm.refresh_from_db()
        vms.append(vm)
    op = act(vms[2], OperationKind.DESTROY, site.admin, capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert [v.state for v in vms[:2]] == [VMState.RUNNING, VMState.RUNNING]
    return vms


def ask(call, site, capture):
    with capture(execute=False):
        op = call(actor=site.admin)
    return operation_run(operation_id=op.pk)


def states(vms):
    hv = Hypervisor(URI)
    return [hv.find_domain(v.domain_name).state for v in vms]


def test_shutdown_saves_exactly_the_running_vms_and_leaves_a_host_without_power_on(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    op = ask(cloud_shutdown_request, site, capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "2 VM(s) saved" in op.message and "Left on" in op.message and "hv1" in op.message
    record = CloudShutdown.objects.get()
    assert sorted(r.vm.name for r in record.vms.all()) == ["web1", "web2"]
    assert set(record.vms.values_list("stage", flat=True)) == {CloudVMStage.SAVED}
    assert states(vms) == ["shutoff"] * 3
    hv = Hypervisor(URI)
    assert hv.snapshot_names("web1") == [record.snapshot_name]
    assert hv.snapshot_names("idle1") == []
    # Not the users' snapshots: no list shows them, no limit counts them.
    assert not Snapshot.objects.exists()
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.MAINTENANCE


def test_while_shut_down_starts_and_installs_are_refused_in_words(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    ask(cloud_shutdown_request, site, capture)
    with pytest.raises(PortalError, match="shut down for maintenance since .*administrator "
                                          "will start it again"):
        act(vms[2], OperationKind.START, site.admin, capture)
    with pytest.raises(PortalError, match="shut down for maintenance"):
        approved_vm(site, capture, name="new1")
    assert not Operation.objects.filter(kind=OperationKind.INSTALL,
                                        vm__name="new1").exists()


def test_bootup_resumes_only_the_recorded_running_set(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    ask(cloud_shutdown_request, site, capture)
    op = ask(cloud_bootup_request, site, capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "2 VM(s) resumed" in op.message
    assert states(vms) == ["running", "running", "shutoff"]
    hv = Hypervisor(URI)
    assert all(hv.snapshot_names(v.domain_name) == [] for v in vms)
    assert [VirtualMachine.objects.get(pk=v.pk).state for v in vms] == [
        VMState.RUNNING, VMState.RUNNING, VMState.SHUTOFF]
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP
    assert CloudShutdown.objects.get().finished_at is not None
    # The cloud is back: starting works again.
    assert act(vms[2], OperationKind.START, site.admin, capture).status == "succeeded"


def test_a_shutdown_killed_after_one_vm_continues_without_snapshotting_twice(
        site, quick, monkeypatch, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    taken: list[str] = []
    real_create, real_destroy = Hypervisor.snapshot_create, Hypervisor.destroy
    dies = {"after": 1}

    def create(self, domain, name, description=""):
        if name not in self.snapshot_names(domain):
            taken.append(domain)
        return real_create(self, domain, name, description)

    def destroy(self, name):
        if dies["after"] == 0:
            raise RuntimeError("worker killed")
        dies["after"] -= 1
        return real_destroy(self, name)

    monkeypatch.setattr(Hypervisor, "snapshot_create", create)
    monkeypatch.setattr(Hypervisor, "destroy", destroy)
    first = ask(cloud_shutdown_request, site, capture)
    assert first.status == OperationStatus.FAILED
    # The second VM's snapshot was taken, then the worker died before forcing it off.
    assert taken == ["web1", "web2"] and states(vms)[:2] == ["shutoff", "running"]
    dies["after"] = 99
    again = ask(cloud_shutdown_request, site, capture)
    assert again.status == OperationStatus.SUCCEEDED, again.message
    assert taken == ["web1", "web2"]  # nothing snapshotted twice
    assert CloudShutdown.objects.count() == 1
    assert states(vms) == ["shutoff"] * 3
    assert Hypervisor(URI).snapshot_names("web2") == [CloudShutdown.objects.get().snapshot_name]
    boot = ask(cloud_bootup_request, site, capture)
    assert boot.status == OperationStatus.SUCCEEDED, boot.message
    assert states(vms) == ["running", "running", "shutoff"]


def test_a_bootup_interrupted_continues_and_never_resumes_a_vm_that_did_not_run(
        site, quick, monkeypatch, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    ask(cloud_shutdown_request, site, capture)
    real_revert = Hypervisor.snapshot_revert
    reverted: list[str] = []

    def revert(self, domain, name):
        reverted.append(domain)
        if len(reverted) == 2 and domain == "web2":
            raise RuntimeError("worker killed")
        return real_revert(self, domain, name)

    monkeypatch.setattr(Hypervisor, "snapshot_revert", revert)
    first = ask(cloud_bootup_request, site, capture)
    assert first.status == OperationStatus.FAILED
    with pytest.raises(PortalError, match="bootup has begun"):
        with capture(execute=False):
            cloud_shutdown_request(actor=site.admin)
    again = ask(cloud_bootup_request, site, capture)
    assert again.status == OperationStatus.SUCCEEDED, again.message
    assert reverted == ["web1", "web2", "web2"]
    assert states(vms) == ["running", "running", "shutoff"]


def test_a_host_failing_its_health_check_keeps_its_vms_waiting(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    ask(cloud_shutdown_request, site, capture)
    quick["ok"] = False
    op = ask(cloud_bootup_request, site, capture)
    assert op.status == OperationStatus.FAILED
    assert "Not back in time, their VMs wait: hv1" in op.message
    assert states(vms) == ["shutoff"] * 3
    with pytest.raises(PortalError, match="shut down for maintenance"):
        act(vms[2], OperationKind.START, site.admin, capture)
    quick["ok"] = True
    assert ask(cloud_bootup_request, site, capture).status == OperationStatus.SUCCEEDED
    assert states(vms) == ["running", "running", "shutoff"]


def test_hosts_with_a_power_method_are_powered_off_and_on(
        site, quick, monkeypatch, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    three_vms(site, capture)
    type(site.host).objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.IPMI, bmc_address="10.0.0.9", bmc_username="root")
    calls: list[str] = []
    monkeypatch.setattr(cloud_power, "ipmi_run",
                        lambda host, action: calls.append(action) or "Chassis Power Control")
    op = ask(cloud_shutdown_request, site, capture)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "Powered off: hv1" in op.message and "Left on" not in op.message
    assert ask(cloud_bootup_request, site, capture).status == OperationStatus.SUCCEEDED
    assert calls == ["off", "on"]


def test_only_admins_may_shut_the_cloud_down(site, django_capture_on_commit_callbacks):
    for role in ("student", "faculty", "orgadmin"):
        with pytest.raises(PortalError, match="You may not shut down the cloud"):
            cloud_shutdown_request(actor=getattr(site, role))
    with pytest.raises(PortalError, match="not shut down"):
        cloud_bootup_request(actor=site.admin)
    assert not CloudShutdown.objects.exists()
    assert not Operation.objects.filter(kind__in=cloud_power.CLOUD_KINDS).exists()


def test_a_second_shutdown_is_refused_while_one_is_under_way(
        site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        cloud_shutdown_request(actor=site.admin)
        with pytest.raises(PortalError, match="under way"):
            cloud_shutdown_request(actor=site.admin)
        with pytest.raises(PortalError, match="under way"):
            cloud_bootup_request(actor=site.admin)


# --- the cloud page --------------------------------------------------------------------------

def test_the_cloud_page_says_what_a_shutdown_would_do_then_what_will_be_resumed(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    three_vms(site, capture)
    client = site.client(site.admin)
    page = client.get(reverse("vms:cloud")).content.decode()
    assert 'id="cloud-running">2<' in page and "None: left on" in page
    # The button asks first, and nothing is queued until the admin confirms.
    asked = client.post(reverse("vms:cloud_shutdown"))
    assert asked.status_code == 200 and 'name="confirmed" value="1"' in asked.content.decode()
    assert not CloudShutdown.objects.exists()
    with capture(execute=False):
        client.post(reverse("vms:cloud_shutdown"), {"confirmed": "1"})
    op = Operation.objects.get(kind=OperationKind.CLOUD_SHUTDOWN)
    page = client.get(reverse("vms:cloud")).content.decode()
    assert "Shutting down since" in page and "is queued" in page
    operation_run(operation_id=op.pk)
    page = client.get(reverse("vms:cloud")).content.decode()
    assert "Shut down since" in page and "web1" in page and "web2" in page
    assert "idle1" not in page and "Left on (no power method)" in page
    assert 'data-action="bootup"' in page
    # Whoever presses Start reads why nothing starts.
    vm_page = client.post(
        reverse("vms:vm_action", args=[VirtualMachine.objects.get(name="idle1").pk, "start"]),
        follow=True).content.decode()
    assert "The cloud is shut down for maintenance since" in vm_page
    # Everyone's dashboard says so too.
    home = site.client(site.student).get(reverse("dashboard")).content.decode()
    assert 'id="cloud-shut"' in home and "an administrator will start it again" in home
    with capture(execute=False):
        client.post(reverse("vms:cloud_bootup"))
    operation_run(operation_id=Operation.objects.get(kind=OperationKind.CLOUD_BOOTUP).pk)
    page = client.get(reverse("vms:cloud")).content.decode()
    assert "The cloud is up" in page and "2 VM(s) resumed" in page
    assert 'id="cloud-shut"' not in client.get(reverse("dashboard")).content.decode()


def test_the_cloud_page_is_for_admins_alone(site):
    for role in ("student", "faculty", "orgadmin"):
        assert site.client(site.users[role]).get(reverse("vms:cloud")).status_code == 404


def test_while_shut_down_snapshots_deletes_and_host_power_are_refused_too(
        site, quick, django_capture_on_commit_callbacks):
    from hosts.power import host_power_request
    from vms.services.snapshots import snapshot_take

    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    ask(cloud_shutdown_request, site, capture)
    with pytest.raises(PortalError, match="shut down for maintenance"):
        with capture(execute=False):
            snapshot_take(vm=vms[0], actor=site.admin, name="mine")
    with pytest.raises(PortalError, match="shut down for maintenance"):
        act(vms[2], OperationKind.DELETE, site.admin, capture)
    type(site.host).objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.IPMI, bmc_address="10.0.0.9", bmc_username="root",
        bmc_password_file="/etc/bmc")
    site.host.refresh_from_db()
    with pytest.raises(PortalError, match="shut down for maintenance"):
        with capture(execute=False):
            host_power_request(host=site.host, on=True, actor=site.admin)


def test_a_vm_operation_under_way_is_waited_for_then_the_shutdown_continues(
        site, quick, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    with capture(execute=False):
        busy = lifecycle.vm_action_request(vm=vms[0], kind=OperationKind.REBOOT,
                                           actor=site.admin)
    first = ask(cloud_shutdown_request, site, capture)
    assert first.status == OperationStatus.FAILED
    assert f"{vms[0].name} is still busy" in first.message
    assert states(vms)[0] == "running"
    assert operation_run(operation_id=busy.pk).status == OperationStatus.SUCCEEDED
    again = ask(cloud_shutdown_request, site, capture)
    assert again.status == OperationStatus.SUCCEEDED, again.message
    assert states(vms) == ["shutoff"] * 3


def test_a_run_near_the_workers_time_limit_queues_the_next_part(
        site, quick, settings, monkeypatch, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    vms = three_vms(site, capture)
    monkeypatch.setattr(cloud_power, "_budget_start", lambda: None)
    saves = {"n": 0}

    def budget():
        saves["n"] += 1
        if saves["n"] == 2:  # the second VM: time is up
            raise cloud_power._OutOfTime

    monkeypatch.setattr(cloud_power, "_budget_check", budget)
    first = ask(cloud_shutdown_request, site, capture)
    assert first.status == OperationStatus.SUCCEEDED and "part 2" in first.message
    assert states(vms)[:2] == ["shutoff", "running"]
    part = Operation.objects.get(kind=OperationKind.CLOUD_SHUTDOWN, status="queued")
    assert part.arguments["part"] == 2
    assert operation_run(operation_id=part.pk).status == OperationStatus.SUCCEEDED
    assert states(vms) == ["shutoff"] * 3

"""Respawning a dead host's VMs on another test-driver host: refusals, the fence first, VMs
left with their reason, room counted across VMs, a dead run given back, the automatic setting
and the host page's confirmation."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.errors import PortalError
from hosts.health_check import CheckResult, host_health_record
from hosts.models import Host, HostStatus, PowerMethod
from hosts.power import FenceImpossible, host_fence, host_fence_means, ipmi_command
from hosts.virt import Hypervisor
from operations.models import Operation, OperationKind, OperationStatus
from operations.reconcile import operation_abandon
from operations.requests import operation_retry
from operations.runner import RunFenced, operation_run
from tests import factories as f
from tests.virt_host import write_node_file
from tests.vms.test_lifecycle import act, install
from vms.models import VirtualMachine, VMState
from vms.services import respawn
from vms.services.lifecycle import vm_action_request
from vms.services.respawn import host_respawn_request

pytestmark = pytest.mark.django_db
NETWORK_XML = (
    "<network><name>default</name><bridge name='virbr0'/>"
    "<ip address='192.168.122.1' netmask='255.255.255.0'>"
    "<dhcp><range start='192.168.122.2' end='192.168.122.99'/></dhcp></ip></network>")
SECRET = "bmc-Pw-1"


@pytest.fixture
def hv2(site, tmp_path) -> Host:
    """A second test-driver host seeing the site's datastore, with its network and pool."""
    uri = write_node_file(tmp_path / "hv2.xml")
    host = f.HostFactory(name="hv2", uri=uri)
    site.datastore.hosts.add(host)
    hv = Hypervisor(uri)
    hv.ensure_network(NETWORK_XML)
    hv.ensure_pool(site.datastore.pool_name, site.datastore.path)
    return host


def on_shared_disk(site, hv2, vm) -> None:
    """Let hv2 see the VM's disk, as a shared datastore would."""
    Hypervisor(hv2.uri).create_volume(site.datastore.pool_name, vm.volume_name, 2 * 1024**3)


def down(host, **fields) -> Host:
    Host.objects.filter(pk=host.pk).update(status=HostStatus.DOWN, **fields)
    host.refresh_from_db()
    return host


@pytest.fixture
def shared(site):
    site.datastore.shared = True
    site.datastore.save()
    return site.datastore


def ask(capture, **kw) -> Operation:
    with capture(execute=False):
        return host_respawn_request(**kw)


def two_vms(site, hv2, capture):
    """lab1 running and lab2 shut off on hv1, their disks seen by hv2."""
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.MAINTENANCE)  # installs on hv1
    lab1, _ = install(site, capture, name="lab1")
    lab2, op = install(site, capture, name="lab2")
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.detail)
    act(lab2, OperationKind.DESTROY, site.admin, capture)
    Host.objects.filter(pk=hv2.pk).update(status=HostStatus.UP)
    for vm in (lab1, lab2):
        on_shared_disk(site, hv2, vm)
    return lab1, lab2


def test_refused_while_the_host_is_up(site, django_capture_on_commit_callbacks):
    install(site, django_capture_on_commit_callbacks, name="lab1")
    with pytest.raises(PortalError, match="only the VMs of a host that is down"):
        ask(django_capture_on_commit_callbacks, host=site.host, actor=site.admin,
            off_confirmed=True)
    assert not Operation.objects.filter(kind=OperationKind.HOST_RESPAWN).exists()


def test_refused_without_fence_means_unless_the_admin_says_it_is_off(
        site, hv2, shared, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab1, lab2 = two_vms(site, hv2, capture)
    host = down(site.host, power_method=PowerMethod.WOL, mac_address="52:54:00:ab:cd:0f")
    assert host_fence_means(host) is None
    with pytest.raises(PortalError, match="tick “I have made sure hv1 is powered off”"):
        ask(capture, host=host, actor=site.admin)
    with pytest.raises(FenceImpossible, match="hv1 cannot be fenced"):
        host_fence(host)

    op = ask(capture, host=host, actor=site.admin, off_confirmed=True)
    assert op.arguments["off_confirmed_by"] == "adm"
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "adm confirmed it is powered off" in op.message
    assert "Respawned 2 VM(s): lab1 on hv2 (started; it was running); lab2 on hv2 (not " \
           "started; it was shut off)." in op.message
    hv = Hypervisor(hv2.uri)
    for vm, state, libvirt_state in ((lab1, VMState.RUNNING, "running"),
                                     (lab2, VMState.SHUTOFF, "shutoff")):
        vm.refresh_from_db()
        assert vm.host == hv2 and vm.state == state and vm.vnc_port is not None
        facts = hv.domain(vm.domain_name)
        assert facts.uuid == str(vm.uuid) and facts.state == libvirt_state
        assert str(vm.volume_name) in hv.domain_xml(vm.domain_name)
    macs = {mac for mac, _ip, _name in hv.network_dhcp_hosts("default")}
    assert lab1.private_ip.mac in macs and lab2.private_ip.mac in macs
    assert op.steps == []  # every VM moved: nothing is left to give back


def test_a_vm_on_a_datastore_only_its_host_sees_stays_with_its_reason(
        site, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab1, _ = install(site, capture, name="lab1")
    host = down(site.host)
    op = operation_run(operation_id=ask(capture, host=host, actor=site.admin,
                                        off_confirmed=True).pk)
    assert op.status == OperationStatus.SUCCEEDED
    assert ("Left on hv1, needing attention: lab1 (its disk is on datastore local, which is "
            "not shared: only hv1 sees it).") in op.message
    lab1.refresh_from_db()
    assert lab1.host == site.host
    assert lab1.attention.startswith(f"Not respawned when its host hv1 was down (operation "
                                     f"#{op.pk}): its disk is on datastore local")
    page = site.client(site.admin).get(reverse("hosts:host_detail", args=[host.pk]))
    assert 'data-attention-vm="lab1"' in page.content.decode()


def test_room_is_counted_across_the_vms_moved(site, hv2, shared,
                                              django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab1, lab2 = two_vms(site, hv2, capture)
    # hv2 has room for one 512 MiB VM: the second placement sees the first.
    Host.objects.filter(pk=hv2.pk).update(memory_mib=1024 + 700)
    op = operation_run(operation_id=ask(capture, host=down(site.host), actor=site.admin,
                                        off_confirmed=True).pk)
    assert "Respawned 1 VM(s): lab1 on hv2" in op.message
    assert "Left on hv1, needing attention: lab2 (No host has 1 vCPUs and 512 MiB of RAM " \
           "free (hv2 has 7 vCPUs and 188 MiB free))" in op.message
    lab2.refresh_from_db()
    assert lab2.host == site.host and lab2.vnc_port is not None
    assert Hypervisor(hv2.uri).find_domain("lab2") is None


def test_a_failed_fence_respawns_nothing(site, hv2, shared, monkeypatch, tmp_path,
                                         django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab1, _ = two_vms(site, hv2, capture)
    monkeypatch.setenv("HV1_BMC", SECRET)
    host = down(site.host, power_method=PowerMethod.IPMI, bmc_address="bmc-hv1.example.org",
                bmc_username="admin", bmc_password_env="HV1_BMC")
    monkeypatch.setenv("PATH", str(tmp_path))  # a real lookup that finds no ipmitool
    op = operation_run(operation_id=ask(capture, host=host, actor=site.admin).pk)
    assert op.status == OperationStatus.FAILED
    assert op.message.startswith("hv1 was not fenced, so no VM was respawned: ipmitool is "
                                 "not installed")
    lab1.refresh_from_db()
    assert lab1.host == site.host and Hypervisor(hv2.uri).find_domain("lab1") is None


def test_a_host_ssh_does_not_reach_is_not_fenced_and_admins_get_the_text(
        site, hv2, shared, monkeypatch, django_capture_on_commit_callbacks):
    from hosts import power
    from hosts.remote import RemoteError

    def unreachable(remote, argv, **kw):
        raise RemoteError("root@10.0.0.5: cannot connect: timed out")

    capture = django_capture_on_commit_callbacks
    lab1, _ = two_vms(site, hv2, capture)
    monkeypatch.setattr(power, "run", unreachable)
    host = down(site.host, power_method=PowerMethod.SSH, address="10.0.0.5")
    op = operation_run(operation_id=ask(capture, host=host, actor=site.admin).pk)
    assert op.status == OperationStatus.FAILED
    assert op.message.startswith("hv1 could not be fenced (powered off), so no VM was "
                                 "respawned; the details below say why.")
    assert "cannot connect: timed out" in op.detail and op.admin_alert
    lab1.refresh_from_db()
    assert lab1.host == site.host and Hypervisor(hv2.uri).find_domain("lab1") is None


def test_the_fence_argv_for_ipmi_powers_off_then_reads_the_status(site, monkeypatch):
    monkeypatch.setenv("HV1_BMC", SECRET)
    host = down(site.host, power_method=PowerMethod.IPMI, bmc_address="bmc-hv1.example.org",
                bmc_username="admin", bmc_password_env="HV1_BMC")
    assert host_fence_means(host) == "IPMI"
    base = ["ipmitool", "-I", "lanplus", "-H", "bmc-hv1.example.org", "-U", "admin", "-E",
            "chassis", "power"]
    for action in ("off", "status"):
        argv, env = ipmi_command(host, action)
        assert argv == [*base, action] and env["IPMI_PASSWORD"] == SECRET
    monkeypatch.delenv("HV1_BMC")
    with pytest.raises(PortalError, match="no environment variable HV1_BMC"):
        host_fence(host)


def test_the_fence_through_ssh_ignores_the_vms_recorded_there(site, monkeypatch):
    from hosts import power
    from hosts.remote import RemoteError, Result

    host = down(site.host, power_method=PowerMethod.SSH, address="10.0.0.5")
    VirtualMachine.objects.create(
        name="web", owner=site.student, organisation=site.org, template=site.template,
        host=host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING)
    monkeypatch.setattr(power, "run", lambda remote, argv, **kw: Result("", "", 0))
    assert host_fence(host) == "hv1 fenced through SSH (poweroff started)"

    def unreachable(remote, argv, **kw):
        raise RemoteError("root@10.0.0.5: cannot connect: timed out")

    monkeypatch.setattr(power, "run", unreachable)
    with pytest.raises(power.PowerFailed, match="cannot connect"):
        host_fence(host)


def test_a_dead_run_gives_back_the_vm_it_was_moving(site, hv2, shared, monkeypatch,
                                                    django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    lab1, lab2 = two_vms(site, hv2, capture)
    port = lab2.vnc_port
    real = respawn.vm_observe

    def die_at_lab2(vm, facts):
        if vm.name == "lab2":
            raise RunFenced("the worker was killed")
        real(vm, facts)

    monkeypatch.setattr(respawn, "vm_observe", die_at_lab2)
    op = operation_run(operation_id=ask(capture, host=down(site.host), actor=site.admin,
                                        off_confirmed=True).pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.RUNNING
    assert [s["step"] for s in op.steps] == ["respawn_place", "respawn_dhcp", "respawn_domain"]
    assert operation_abandon(op, why="The worker stopped answering")
    op.refresh_from_db()
    assert op.steps == [] and "what it had taken was given back" in op.message
    lab1.refresh_from_db()
    lab2.refresh_from_db()
    assert lab1.host == hv2  # moved before the worker died: it stays moved
    assert lab2.host == site.host and lab2.vnc_port == port
    assert Hypervisor(hv2.uri).find_domain("lab2") is None
    assert Hypervisor(hv2.uri).find_domain("lab1") is not None

    # A retry goes on with what is still on the dead host.
    monkeypatch.setattr(respawn, "vm_observe", real)
    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    assert "Respawned 1 VM(s): lab2 on hv2 (not started; it was shut off)." in op.message
    lab2.refresh_from_db()
    assert lab2.host == hv2 and Hypervisor(hv2.uri).domain("lab2").uuid == str(lab2.uuid)


@pytest.mark.parametrize(("automatic", "method", "asked"), [
    (False, PowerMethod.IPMI, False), (True, PowerMethod.IPMI, True),
    (True, PowerMethod.NONE, False)])
def test_the_health_check_asks_for_a_respawn_when_the_setting_allows(
        site, settings, django_capture_on_commit_callbacks, automatic, method, asked):
    settings.PORTAL = {**settings.PORTAL, "RESPAWN_AUTOMATIC": automatic}
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "FAILS_BEFORE_DOWN": 1}
    Host.objects.filter(pk=site.host.pk).update(
        power_method=method, bmc_address="bmc", bmc_username="admin", bmc_password_env="X")
    site.host.refresh_from_db()
    VirtualMachine.objects.create(
        name="web", owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING)
    with django_capture_on_commit_callbacks(execute=False):
        host_health_record(site.host, [CheckResult("reachable", False, "no route")])
    assert site.host.status == HostStatus.DOWN
    ops = Operation.objects.filter(kind=OperationKind.HOST_RESPAWN, host=site.host)
    assert ops.exists() == asked
    if asked:
        assert ops.get().arguments == {"off_confirmed_by": "", "automatic": True}
        assert ops.get().requested_by is None


def test_the_host_page_asks_with_the_fencing_checkbox(site, shared,
                                                      django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    client = site.client(site.admin)
    url = reverse("vms:host_respawn", args=[site.host.pk])
    page = client.get(reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert 'id="host-respawn"' not in page  # up: nothing to respawn
    install(site, capture, name="lab1")
    down(site.host)
    page = client.get(reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert url in page and "data-confirm" not in page.split('id="host-respawn"')[1][:600]
    question = client.post(url).content.decode()
    assert "Respawn the VMs of hv1 elsewhere?" in question
    assert 'name="checked" value="1"' in question and "I have made sure hv1 is powered off." \
        in question
    assert not Operation.objects.filter(kind=OperationKind.HOST_RESPAWN).exists()
    refused = client.post(url, {"confirmed": "1"}, follow=True).content.decode()
    assert "tick “I have made sure hv1 is powered off”" in refused
    assert not Operation.objects.filter(kind=OperationKind.HOST_RESPAWN).exists()
    with capture(execute=False):
        done = client.post(url, {"confirmed": "1", "checked": "1"}, follow=True)
    assert "Respawn of the VMs of hv1 queued" in done.content.decode()
    op = Operation.objects.get(kind=OperationKind.HOST_RESPAWN)
    assert op.requested_by == site.admin and op.arguments["off_confirmed_by"] == "adm"


def test_the_question_has_no_checkbox_when_the_host_can_be_fenced(
        site, django_capture_on_commit_callbacks):
    install(site, django_capture_on_commit_callbacks, name="lab1")
    down(site.host, power_method=PowerMethod.SSH, address="10.0.0.5")
    question = site.client(site.admin).post(
        reverse("vms:host_respawn", args=[site.host.pk])).content.decode()
    assert "powered off first through SSH" in question and 'name="checked"' not in question


@pytest.mark.parametrize("role", ["student", "faculty", "orgadmin"])
def test_only_admins_may_respawn(site, role, django_capture_on_commit_callbacks):
    install(site, django_capture_on_commit_callbacks, name="lab1")
    down(site.host)
    response = site.client(site.users[role]).post(
        reverse("vms:host_respawn", args=[site.host.pk]), {"confirmed": "1", "checked": "1"})
    assert response.status_code == 404
    assert not Operation.objects.filter(kind=OperationKind.HOST_RESPAWN).exists()


def test_no_operation_on_a_vm_while_a_respawn_is_moving_it(site, hv2,
                                                            django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    # The respawn has placed lab1 on hv2 (its steps name it) but not started it yet.
    VirtualMachine.objects.filter(pk=vm.pk).update(host=hv2)
    moving = Operation.objects.create(
        kind=OperationKind.HOST_RESPAWN, host=down(site.host), status=OperationStatus.RUNNING,
        steps=[{"step": "respawn_place", "vm": vm.pk, "source": site.host.pk}])
    vm.refresh_from_db()
    with (django_capture_on_commit_callbacks(execute=False),
          pytest.raises(PortalError, match="lab1 is being started again on another host, as "
                                           "hv1 is down")):
        vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.admin)
    assert not vm.operations.filter(kind=OperationKind.DESTROY).exists()
    # Once that VM is done (its steps forgotten), it may be acted on again.
    Operation.objects.filter(pk=moving.pk).update(steps=[])
    with django_capture_on_commit_callbacks(execute=False):
        vm_action_request(vm=vm, kind=OperationKind.DESTROY, actor=site.admin)
    assert vm.operations.filter(kind=OperationKind.DESTROY).count() == 1

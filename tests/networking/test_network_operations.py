"""DHCP entries, VNC ports, public IPs and security-domain moves, on libvirt's test driver."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from core.errors import PoolExhausted, PortalError
from hosts.virt import Hypervisor
from hosts.vnc import vnc_port_allocate
from networking import nat
from networking.models import NATMapping, PrivateIP, PublicIP
from operations.models import OperationKind, OperationStatus
from operations.requests import operation_create
from operations.runner import operation_run
from tests import factories as f
from tests.vms.test_lifecycle import act, install, run_pending
from vms.models import RequestKind, VirtualMachine, VMState
from vms.services.workflow import vm_change_request_create, vm_request_approve

pytestmark = pytest.mark.django_db
URI = "test:///default"


class RecordingNat:
    """A NAT box that remembers its rules, to see what the portal applies."""

    rules: set[tuple[str, str]] = set()
    calls: list[tuple[str, tuple[str, str]]] = []

    def apply(self, m):
        self.calls.append(("apply", (m.public_ip, m.private_ip)))
        self.rules.add((m.public_ip, m.private_ip))

    def remove(self, m):
        self.calls.append(("remove", (m.public_ip, m.private_ip)))
        self.rules.discard((m.public_ip, m.private_ip))

    def clear(self, mappings):
        self.calls.append(("clear", ()))
        self.rules.clear()


@pytest.fixture
def nat_box(monkeypatch):
    RecordingNat.rules = set()
    RecordingNat.calls = []
    monkeypatch.setattr(nat, "backend_from_settings", lambda config: RecordingNat())
    return RecordingNat


def dhcp_hosts(network="default"):
    return Hypervisor(URI).network_dhcp_hosts(network)


def test_install_writes_a_dhcp_entry_and_delete_removes_it(
        site, django_capture_on_commit_callbacks):
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    ip = vm.private_ip
    assert (ip.mac, ip.address, vm.domain_name) in dhcp_hosts()
    act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert [h for h in dhcp_hosts() if h[0] == ip.mac] == []


def test_install_gives_each_vm_its_own_vnc_port_on_the_host(
        site, django_capture_on_commit_callbacks, settings):
    settings.PORTAL = {**settings.PORTAL, "VNC_PORTS": (5910, 5911)}
    a, _ = install(site, django_capture_on_commit_callbacks, name="vnc-a")
    b, _ = install(site, django_capture_on_commit_callbacks, name="vnc-b")
    assert {a.vnc_port, b.vnc_port} == {5910, 5911}
    xml = Hypervisor(URI).domain_xml(a.domain_name)
    assert f"port='{a.vnc_port}'" in xml or f'port="{a.vnc_port}"' in xml
    c, op = install(site, django_capture_on_commit_callbacks, name="vnc-c")
    assert op.status == OperationStatus.FAILED and "No free VNC port" in op.message
    act(a, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert a.vnc_port is None
    d, op = install(site, django_capture_on_commit_callbacks, name="vnc-d")
    assert op.status == OperationStatus.SUCCEEDED and d.vnc_port == 5910


def test_vnc_port_is_kept_when_asked_again(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    assert vnc_port_allocate(vm=vm) == vm.vnc_port


def test_a_request_with_a_public_ip_gets_one_and_its_nat_mapping(
        site, django_capture_on_commit_callbacks, nat_box):
    f.make_public_pool(2)
    vm, op = install(site, django_capture_on_commit_callbacks, public_ip=True)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    public = PublicIP.objects.get(vm=vm)
    assert public.address in op.message
    mapping = NATMapping.objects.get(vm=vm)
    assert mapping.private_address == vm.private_ip.address and mapping.applied_at
    assert nat_box.rules == {(public.address, vm.private_ip.address)}
    act(vm, OperationKind.DELETE, site.admin, django_capture_on_commit_callbacks)
    assert nat_box.rules == set()
    assert not PublicIP.objects.filter(vm__isnull=False).exists()
    assert not NATMapping.objects.exists()


def test_an_empty_public_pool_fails_the_install_clearly_and_leaks_nothing(
        site, django_capture_on_commit_callbacks, nat_box):
    vm, op = install(site, django_capture_on_commit_callbacks, public_ip=True)
    assert op.status == OperationStatus.FAILED
    assert "No free public IP" in op.message
    assert not PrivateIP.objects.filter(vm=vm).exists()
    assert Hypervisor(URI).find_domain(vm.domain_name) is None
    assert nat_box.rules == set()


def change(site, vm, kind, capture, actor=None, **kw):
    req = vm_change_request_create(requester=actor or site.admin, vm=vm, kind=kind,
                                   purpose="needed", **kw)
    approver = site.another_admin() if req.requester == site.admin else site.admin
    with capture(execute=False):
        vm_request_approve(request=req, actor=approver)
    op = run_pending(vm)
    vm.refresh_from_db()
    return req, op


def test_moving_a_stopped_vm_gives_it_an_address_in_the_new_vlan(
        site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    act(vm, OperationKind.DESTROY, site.admin, django_capture_on_commit_callbacks)
    old = vm.private_ip
    _, op = change(site, vm, RequestKind.NETWORK, django_capture_on_commit_callbacks,
                   security_domain=site.domain2)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    vm = VirtualMachine.objects.get(pk=vm.pk)
    new = vm.private_ip
    assert vm.security_domain == site.domain2
    assert new.vlan == site.vlan2 and new.address.startswith("10.20.0.")
    assert list(PrivateIP.objects.filter(vm=vm)) == [new]
    old.refresh_from_db()
    assert old.vm is None
    xml = Hypervisor(URI).domain_xml(vm.domain_name)
    assert new.mac in xml and old.mac not in xml and "<tag id='20'" in xml.replace('"', "'")
    assert (new.mac, new.address, vm.domain_name) in dhcp_hosts("private")
    assert not [h for h in dhcp_hosts("default") if h[0] == old.mac]


def test_a_move_that_fails_leaves_the_vm_as_it_was(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    old = vm.private_ip
    # The test driver cannot hot-plug: the running VM's move fails at the interface swap.
    _, op = change(site, vm, RequestKind.NETWORK, django_capture_on_commit_callbacks,
                   security_domain=site.domain2)
    assert op.status == OperationStatus.FAILED
    assert "not supported" in op.detail and "shut it down and retry" in op.message
    vm = VirtualMachine.objects.get(pk=vm.pk)
    assert vm.security_domain == site.domain and list(PrivateIP.objects.filter(vm=vm)) == [old]
    assert vm.state == VMState.RUNNING
    hosts = dhcp_hosts()
    assert (old.mac, old.address, vm.domain_name) in hosts
    assert len([h for h in hosts if h[2] == vm.domain_name]) == 1
    assert dhcp_hosts("private") == []
    assert old.mac in Hypervisor(URI).domain_xml(vm.domain_name)


def test_a_public_ip_change_request_maps_one_and_release_gives_it_back(
        site, django_capture_on_commit_callbacks, nat_box):
    f.make_public_pool(1)
    vm, _ = install(site, django_capture_on_commit_callbacks)
    _, op = change(site, vm, RequestKind.PUBLIC_IP, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    public = PublicIP.objects.get(vm=vm)
    assert nat_box.rules == {(public.address, vm.private_ip.address)}
    with pytest.raises(PortalError, match="already has a public IP"):
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.PUBLIC_IP,
                                 purpose="again")
    op = act(vm, OperationKind.PUBLIC_IP_RELEASE, site.admin, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED
    assert nat_box.rules == set() and not PublicIP.objects.filter(vm=vm).exists()


def test_nat_resync_clears_the_box_and_applies_every_mapping(
        site, django_capture_on_commit_callbacks, nat_box):
    f.make_public_pool(2)
    a, _ = install(site, django_capture_on_commit_callbacks, name="nat-a", public_ip=True)
    b, _ = install(site, django_capture_on_commit_callbacks, name="nat-b", public_ip=True)
    nat_box.rules = {("203.0.113.99", "10.9.9.9")}
    nat_box.calls = []
    with django_capture_on_commit_callbacks(execute=False):
        op = operation_create(kind=OperationKind.NAT_RESYNC, requested_by=site.admin)
    op = operation_run(operation_id=op.pk)
    assert op.status == OperationStatus.SUCCEEDED and "2 mapping" in op.message
    assert nat_box.calls[0] == ("clear", ())
    assert nat_box.rules == {(PublicIP.objects.get(vm=v).address, v.private_ip.address)
                             for v in (a, b)}


def test_the_move_refuses_a_domain_not_offered_or_the_current_one(
        site, django_capture_on_commit_callbacks):
    from networking.models import SecurityDomain

    vm, _ = install(site, django_capture_on_commit_callbacks)
    physics = SecurityDomain.objects.get(name="Physics lab")
    for domain, text in ((physics, "not offered"), (site.domain, "already in")):
        with pytest.raises(ValidationError) as err:
            vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.NETWORK,
                                     purpose="x", security_domain=domain)
        assert text in err.value.message_dict["security_domain"][0]


def test_only_one_change_per_vm_waits_at_a_time(site, django_capture_on_commit_callbacks):
    from vms.models import VMRequest

    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.NETWORK,
                             purpose="x", security_domain=site.domain2, faculty=site.faculty)
    with pytest.raises(PortalError, match="already waits"):
        vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.PUBLIC_IP,
                                 purpose="x", faculty=site.faculty)
    assert VMRequest.objects.filter(target=vm).count() == 1


def test_someone_else_cannot_ask_to_change_a_vm(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    for who in (site.student, site.faculty, site.other_orgadmin):
        with pytest.raises(PortalError):
            vm_change_request_create(requester=who, vm=vm, kind=RequestKind.PUBLIC_IP,
                                     purpose="x", faculty=site.faculty)


def test_a_change_request_climbs_the_same_chain(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    req = vm_change_request_create(requester=site.student, vm=vm, kind=RequestKind.PUBLIC_IP,
                                   purpose="demo day", faculty=site.faculty)
    assert req.stage == "faculty" and req.target == vm
    with django_capture_on_commit_callbacks(execute=False):
        req = vm_request_approve(request=req, actor=site.faculty)
        req = vm_request_approve(request=req, actor=site.orgadmin)
        assert vm.operations.filter(status="queued").count() == 0
        req = vm_request_approve(request=req, actor=site.admin)
    assert req.stage == "approved"
    assert vm.operations.get(status="queued").kind == OperationKind.PUBLIC_IP_ATTACH


def test_a_change_cannot_be_approved_while_the_vm_is_busy(site, django_capture_on_commit_callbacks):
    from vms.services.lifecycle import vm_action_request

    vm, _ = install(site, django_capture_on_commit_callbacks)
    req = vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.PUBLIC_IP,
                                   purpose="x")
    with django_capture_on_commit_callbacks(execute=False):
        vm_action_request(vm=vm, kind=OperationKind.SUSPEND, actor=site.admin)
        with pytest.raises(PortalError, match="under way"):
            vm_request_approve(request=req, actor=site.another_admin())
    req.refresh_from_db()
    assert req.stage == "admin"


def test_the_request_form_offers_only_the_organisations_security_domains(site):
    from django.urls import reverse

    body = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    assert "Research" in body and "Private" in body and "Physics lab" not in body


def test_exhaustion_of_the_vlan_pool_is_clear(site):
    from networking.allocation import ip_allocate

    vms = []
    for i in range(4):
        req = f.VMRequestFactory(requester=site.student, template=site.template,
                                 name=f"ex-{i}", stage="approved")
        vms.append(VirtualMachine.objects.create(
            name=f"ex-{i}", owner=site.student, organisation=site.org, request=req,
            template=site.template, vcpus=1, memory_mib=256, disk_gib=1))
    for vm in vms[:3]:
        ip_allocate(vm=vm, vlan=site.vlan2)
    with pytest.raises(PoolExhausted, match="private"):
        ip_allocate(vm=vms[3], vlan=site.vlan2)


def test_vnc_ports_held_by_domains_the_portal_does_not_know_are_skipped(
        site, django_capture_on_commit_callbacks, settings):
    from hosts.virt.domain_xml import DomainSpec, build_domain_xml

    settings.PORTAL = {**settings.PORTAL, "VNC_PORTS": (5920, 5922)}
    hv = Hypervisor(URI)
    hv.define_domain(build_domain_xml(DomainSpec(
        name="stranger", uuid="0f1c7c57-4d1b-4c8b-9f3e-0c4a8f0a1b2c", domain_type="test",
        vcpus=1, memory_mib=128, disk_path="/x.qcow2", vnc_port=5920)))
    assert 5920 in hv.vnc_ports_in_use()
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED and vm.vnc_port == 5921


def test_a_stale_dhcp_entry_for_a_pool_address_is_replaced(
        site, django_capture_on_commit_callbacks):
    hv = Hypervisor(URI)
    hv.network_dhcp_host_add("default", "52:54:00:de:ad:00", "192.168.122.100", "gone")
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    hosts = dhcp_hosts()
    assert ("52:54:00:de:ad:00", "192.168.122.100", "gone") not in hosts
    assert (vm.private_ip.mac, "192.168.122.100", vm.domain_name) in hosts


def test_the_adapter_refuses_a_clashing_dhcp_entry_unless_asked_to_replace(site):
    from hosts.virt import VirtError

    hv = Hypervisor(URI)
    hv.network_dhcp_host_add("default", "52:54:00:de:ad:01", "192.168.122.150", "a")
    with pytest.raises(VirtError, match="already has"):
        hv.network_dhcp_host_add("default", "52:54:00:de:ad:02", "192.168.122.150", "b")
    assert hv.network_dhcp_host_add("default", "52:54:00:de:ad:02", "192.168.122.150", "b",
                                    replace=True) == [("52:54:00:de:ad:01", "192.168.122.150")]

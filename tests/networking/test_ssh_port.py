"""Forwarded SSH ports: settings, allocation, iptables rules, and the request -> release cycle."""

from __future__ import annotations

import threading

import pytest
from django.core.checks import run_checks

from core.errors import PoolExhausted, PortalError
from hosts.remote import RemoteError, RemoteHost, Result
from networking import nat
from networking.allocation import (
    SSHPortSettingsError,
    parse_port_range,
    ssh_port_allocate,
    ssh_port_config,
    ssh_port_config_from,
    ssh_port_release,
    ssh_ports_fill,
)
from networking.models import PublicIP, SSHPort
from operations.models import OperationKind, OperationStatus
from operations.requests import operation_create
from operations.runner import operation_run
from tests import factories as f
from tests.networking.test_allocation import make_vms, race
from tests.vms.test_lifecycle import act, install, run_pending
from vms.models import RequestKind, VirtualMachine
from vms.services.workflow import vm_change_request_create, vm_request_approve

BOX = "198.51.100.7"


class RecordingNat:
    """A NAT box that remembers its mappings and port forwards; it can be told to fail."""

    rules: set[tuple] = set()
    calls: list[tuple] = []
    fail_forward_to: str | None = None  # a private address whose forward breaks half-way

    def apply(self, m):
        self.calls.append(("apply", m.public_ip, m.private_ip))
        self.rules.add(("map", m.public_ip, m.private_ip))

    def remove(self, m):
        self.calls.append(("remove", m.public_ip, m.private_ip))
        self.rules.discard(("map", m.public_ip, m.private_ip))

    def forward(self, fwd):
        self.calls.append(("forward", fwd.public_ip, fwd.public_port, fwd.private_ip))
        # The DNAT rule goes in first, as on a real box; then the FORWARD accept may fail.
        self.rules.add(("dnat", fwd.public_ip, fwd.public_port, fwd.private_ip))
        if fwd.private_ip == self.fail_forward_to:
            raise RemoteError("root@nat:22: iptables: Chain 'FORWARD' does not exist",
                              exit_status=1, stderr="iptables: No chain/target/match by that name.")
        self.rules.add(("accept", fwd.private_ip))

    def unforward(self, fwd):
        self.calls.append(("unforward", fwd.public_ip, fwd.public_port, fwd.private_ip))
        self.rules.discard(("dnat", fwd.public_ip, fwd.public_port, fwd.private_ip))
        self.rules.discard(("accept", fwd.private_ip))

    def clear(self, mappings):
        self.calls.append(("clear",))
        self.rules.clear()


@pytest.fixture
def box(monkeypatch, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "10000-10002"}
    RecordingNat.rules, RecordingNat.calls, RecordingNat.fail_forward_to = set(), [], None
    monkeypatch.setattr(nat, "backend_from_settings", lambda config: RecordingNat())
    return RecordingNat


def ask(site, vm, capture, actor=None, **kw):
    """Ask for an SSH port, have an admin other than the requester approve, run the operation."""
    req = vm_change_request_create(requester=actor or site.admin, vm=vm,
                                   kind=RequestKind.SSH_PORT, purpose="ssh from home", **kw)
    approver = site.another_admin() if req.requester == site.admin else site.admin
    with capture(execute=False):
        vm_request_approve(request=req, actor=approver)
    op = run_pending(vm)
    vm.refresh_from_db()
    return req, op


def forwards(rules):
    return {r for r in rules if r[0] == "dnat"}


# ---- settings ----

@pytest.mark.parametrize(("text", "says"), [
    ("abc", "not a port range"), ("10000", "not a port range"), ("10000-", "not a port range"),
    ("15000-10000", "reversed"), ("0-10", "outside"), ("10000-70000", "outside"),
])
def test_a_bad_port_range_is_refused_with_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        parse_port_range(text)
    with pytest.raises(SSHPortSettingsError, match=f"PORTAL_NAT_FORWARD_PORTS: .*{says}"):
        ssh_port_config_from({"PUBLIC_ADDRESS": BOX, "FORWARD_PORTS": text})


def test_the_default_range_is_anweddols(settings):
    assert settings.PORTAL_NAT["FORWARD_PORTS"] == "10000-15000"
    config = ssh_port_config_from({"PUBLIC_ADDRESS": BOX, "FORWARD_PORTS": "10000-15000"})
    assert (config.address, config.first, config.last, config.size) == (BOX, 10000, 15000, 5001)


@pytest.mark.parametrize(("address", "says"), [
    ("nat.example.org", "not an IPv4 address"), ("127.0.0.1", "not a unicast"),
    ("0.0.0.0", "not a unicast"), ("224.0.0.5", "not a unicast"),  # noqa: S104
])
def test_a_bad_public_address_is_refused(address, says):
    with pytest.raises(SSHPortSettingsError, match=f"PORTAL_NAT_PUBLIC_ADDRESS .*{says}"):
        ssh_port_config_from({"PUBLIC_ADDRESS": address, "FORWARD_PORTS": "10000-10010"})


def test_a_range_holding_the_boxs_own_ssh_port_is_refused():
    with pytest.raises(SSHPortSettingsError, match="holds port 2222"):
        ssh_port_config_from({"ADDRESS": BOX, "PORT": 2222, "FORWARD_PORTS": "2000-3000"})
    # The same range on another address of the box is fine.
    assert ssh_port_config_from({"ADDRESS": "10.0.0.1", "PORT": 2222, "PUBLIC_ADDRESS": BOX,
                                 "FORWARD_PORTS": "2000-3000"}).first == 2000


def test_the_address_defaults_to_the_nat_boxs_ipv4_address_else_none_is_offered():
    assert ssh_port_config_from({"ADDRESS": BOX, "FORWARD_PORTS": "10000-10001"}).address == BOX
    for address in ("", "nat.example.org", "127.0.0.1"):
        assert ssh_port_config_from({"ADDRESS": address, "FORWARD_PORTS": "x"}) is None


def test_the_system_check_reports_bad_settings(settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "9-1"}
    errors = [e for e in run_checks() if e.id == "networking.E001"]
    assert len(errors) == 1 and "reversed" in errors[0].msg
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "10000-15000"}
    assert not [e for e in run_checks() if e.id == "networking.E001"]


# ---- allocation ----

@pytest.mark.django_db
def test_allocation_takes_the_lowest_free_port_once_per_vm(site, box):
    a, b, c, d = make_vms(site, 4)
    assert ssh_port_allocate(vm=a).port == 10000
    assert ssh_port_allocate(vm=a).port == 10000  # kept, not a second one
    assert ssh_port_allocate(vm=b).port == 10001
    assert ssh_port_allocate(vm=c).port == 10002
    with pytest.raises(PoolExhausted, match=rf"No free SSH port is left on {BOX} \(10000-10002\)"):
        ssh_port_allocate(vm=d)
    assert not SSHPort.objects.filter(vm=d).exists()
    assert sorted(SSHPort.objects.values_list("port", flat=True)) == [10000, 10001, 10002]
    ssh_port_release(vm=b)
    assert ssh_port_allocate(vm=d).port == 10001


@pytest.mark.django_db
def test_allocation_stays_inside_the_range_when_it_changes(site, box, settings):
    a, b = make_vms(site, 2)
    assert ssh_port_allocate(vm=a).port == 10000
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "FORWARD_PORTS": "12000-12001"}
    assert ssh_port_allocate(vm=b).port == 12000
    assert ssh_port_allocate(vm=a).port == 10000  # a port held before the change stays held
    assert ssh_ports_fill() == 0


@pytest.mark.django_db
def test_no_port_is_taken_when_none_are_offered(site, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "ADDRESS": "", "PUBLIC_ADDRESS": ""}
    assert ssh_port_config() is None
    (vm,) = make_vms(site, 1)
    with pytest.raises(PortalError, match="forwards no SSH ports"):
        ssh_port_allocate(vm=vm)
    assert not SSHPort.objects.exists()


@pytest.mark.django_db
def test_the_unique_constraint_refuses_a_port_twice(site, box):
    from django.db import IntegrityError, transaction

    SSHPort.objects.create(address=BOX, port=10000)
    with pytest.raises(IntegrityError), transaction.atomic():
        SSHPort.objects.create(address=BOX, port=10000)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_ssh_port_allocations_share_ten_ports(site, settings):
    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "10000-10009"}
    vms = make_vms(site, 50)
    # The pool starts empty: the allocators also race to fill it.
    results, errors = race(vms, lambda vm: ssh_port_allocate(vm=vm))
    assert sorted(r.port for r in results) == list(range(10000, 10010)) and len(errors) == 40
    held = SSHPort.objects.filter(vm__isnull=False)
    assert sorted(held.values_list("port", flat=True)) == list(range(10000, 10010))
    assert len(set(held.values_list("vm", flat=True))) == 10
    assert SSHPort.objects.count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_allocators_hand_out_no_port_twice(site, settings):
    from django.db import connection

    settings.PORTAL_NAT = {**settings.PORTAL_NAT, "PUBLIC_ADDRESS": BOX,
                           "FORWARD_PORTS": "20000-20149"}
    vms = make_vms(site, 160)
    taken: list[list[int]] = [[], []]
    exhausted = [0, 0]

    def allocator(i):
        try:
            for vm in vms[i::2]:
                try:
                    taken[i].append(ssh_port_allocate(vm=vm).port)
                except PoolExhausted:
                    exhausted[i] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=allocator, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ports = taken[0] + taken[1]
    assert len(ports) == 150 and len(set(ports)) == 150 and sum(exhausted) == 10
    assert taken[0] and taken[1]
    assert SSHPort.objects.filter(vm__isnull=False).count() == 150


# ---- the iptables rules ----

class FakeBox:
    """Stands in for hosts.remote.run: records argv; `-C` says whether the rule is there."""

    def __init__(self, present: bool = False, listing: str = "") -> None:
        self.argvs: list[list[str]] = []
        self.present, self.listing = present, listing

    def __call__(self, host, argv, check=True):
        self.argvs.append(argv)
        if "-C" in argv:
            return Result("", "", 0 if self.present else 1)
        if "-S" in argv:
            return Result(self.listing if "FORWARD" in argv else "", "", 0)
        return Result("", "", 0)


FWD = nat.PortForward(BOX, 10001, "10.20.0.5")
WAIT = ["iptables", "-w", "10"]
DNAT = ["PREROUTING", "-d", f"{BOX}/32", "-p", "tcp", "-m", "tcp", "--dport", "10001",
        "-m", "comment", "--comment", "portal-nat", "-j", "DNAT",
        "--to-destination", "10.20.0.5:22"]
IN = ["FORWARD", "-d", "10.20.0.5/32", "-p", "tcp", "-m", "tcp", "--dport", "22",
      "-m", "comment", "--comment", "portal-nat", "-j", "ACCEPT"]
OUT = ["FORWARD", "-s", "10.20.0.5/32", "-p", "tcp", "-m", "tcp", "--sport", "22",
       "-m", "comment", "--comment", "portal-nat", "-j", "ACCEPT"]


def iptables_nat(monkeypatch, fake):
    monkeypatch.setattr(nat, "run", fake)
    return nat.IptablesNat(RemoteHost(address="192.0.2.1"), "eth0")


def test_forward_checks_then_adds_the_dnat_and_the_forward_accepts(monkeypatch):
    fake = FakeBox(present=False)
    iptables_nat(monkeypatch, fake).forward(FWD)
    assert fake.argvs == [
        [*WAIT, "-t", "nat", "-C", *DNAT], [*WAIT, "-t", "nat", "-A", *DNAT],
        [*WAIT, "-t", "filter", "-C", *IN], [*WAIT, "-t", "filter", "-I", *IN],
        [*WAIT, "-t", "filter", "-C", *OUT], [*WAIT, "-t", "filter", "-I", *OUT],
    ]


def test_forward_adds_nothing_that_is_there_already(monkeypatch):
    fake = FakeBox(present=True)
    iptables_nat(monkeypatch, fake).forward(FWD)
    assert [argv[5] for argv in fake.argvs] == ["-C", "-C", "-C"]


def test_unforward_deletes_each_rule_in_reverse_when_present(monkeypatch):
    fake = FakeBox(present=True)
    iptables_nat(monkeypatch, fake).unforward(FWD)
    assert fake.argvs == [
        [*WAIT, "-t", "filter", "-C", *OUT], [*WAIT, "-t", "filter", "-D", *OUT],
        [*WAIT, "-t", "filter", "-C", *IN], [*WAIT, "-t", "filter", "-D", *IN],
        [*WAIT, "-t", "nat", "-C", *DNAT], [*WAIT, "-t", "nat", "-D", *DNAT],
    ]
    gone = FakeBox(present=False)
    iptables_nat(monkeypatch, gone).unforward(FWD)
    assert all(argv[5] == "-C" for argv in gone.argvs)


def test_clear_also_removes_the_portals_forward_accepts_and_nothing_else(monkeypatch):
    listing = f"-P FORWARD DROP\n-A FORWARD -i eth1 -j ACCEPT\n-A {' '.join(IN)}\n"
    fake = FakeBox(listing=listing)
    monkeypatch.setattr(nat.IptablesNat, "_aliases", lambda self: set())
    iptables_nat(monkeypatch, fake).clear([])
    assert [*WAIT, "-t", "filter", "-S", "FORWARD"] in fake.argvs
    assert [a for a in fake.argvs if "-D" in a] == [[*WAIT, "-t", "filter", "-D", *IN]]


@pytest.mark.parametrize("bad", [
    {"public_port": 0}, {"public_port": 65536}, {"public_port": True}, {"public_port": "22"},
    {"private_port": 0}, {"private_ip": BOX}, {"public_ip": "not-an-ip"},
])
def test_a_port_forward_refuses_bad_values(bad):
    fields = {"public_ip": BOX, "public_port": 10000, "private_ip": "10.20.0.5", **bad}
    with pytest.raises(ValueError):
        nat.PortForward(**fields)


def test_the_null_backend_forwards_nothing_and_says_so(caplog):
    caplog.set_level("INFO")
    nat.NullNat().forward(FWD)
    nat.NullNat().unforward(FWD)
    assert "not forwarding 198.51.100.7:10001 -> 10.20.0.5:22" in caplog.text


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

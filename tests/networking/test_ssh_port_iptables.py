"""Forwarded SSH ports: the iptables rules that forward a port, and the backends' checks."""

from __future__ import annotations

import pytest

from hosts.remote import RemoteHost, Result
from networking import nat
from tests.networking.ssh_port_helpers import BOX

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

"""Netns-tier tests of forwarded SSH ports: outside -> NAT box's address:port -> guest's sshd.

A module fixture builds three network places: the root namespace stands for the outside world;
a namespace `portalfwd-<random>` is the NAT box (its sshd takes the portal's iptables commands,
its address on the outside link is where forwarded ports listen, IP forwarding is on and the
FORWARD policy is DROP, so only the portal's accepts let anything through); a namespace
`portalgst-<random>` stands in for the guest, with its own sshd on port 22 of a private
address whose only route is through the NAT box. The outside has no route to the private
network: only the DNAT rule reaches it. Teardown stops both sshds and deletes the namespaces.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts import remote
from hosts.remote import RemoteError, RemoteHost, fetch_host_key, run
from networking import nat
from networking.models import PrivateIP, SSHPort
from tests import factories as f
from tests.integration.test_nat_iptables import (
    _keygen,
    _kill_namespace_processes,
    _wait_for_port,
    sh,
)
from tests.networking.test_allocation import make_vms

pytestmark = pytest.mark.netns

PORT = 10022


@dataclass(frozen=True)
class Lab:
    """The NAT box and the stand-in guest, and how to reach each."""

    box_ns: str
    guest_ns: str
    box_address: str  # on the outside link: where forwarded ports listen
    guest_address: str
    box_host_key: str
    guest_host_key: str
    client_key: Path
    link: str  # the box's interface on the outside link

    def box_ns_run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run argv inside the NAT box's namespace, as the test (not through SSH)."""
        return sh("ip", "netns", "exec", self.box_ns, *argv)

    def rules(self, table: str) -> list[str]:
        """Return the `-A` lines of a table of the NAT box."""
        out = self.box_ns_run("iptables", "-w", "-t", table, "-S").stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def box(self) -> RemoteHost:
        """Return how the portal reaches the NAT box's sshd."""
        return RemoteHost(address=self.box_address, host_key=self.box_host_key,
                          key_filename=str(self.client_key), connect_timeout=5,
                          command_timeout=20)

    def through_port(self, port: int = PORT) -> RemoteHost:
        """Return the guest's sshd as the outside sees it: the box's address and a port."""
        return RemoteHost(address=self.box_address, port=port, host_key=self.guest_host_key,
                          key_filename=str(self.client_key), connect_timeout=5,
                          command_timeout=20)

    def settings(self) -> dict[str, object]:
        """Return the portal's NAT settings for this box."""
        return {"BACKEND": "iptables-ssh", "ADDRESS": self.box_address, "PORT": 22,
                "USERNAME": "root", "HOST_KEY": self.box_host_key,
                "KEY_FILE": str(self.client_key), "INTERFACE": self.link,
                "PUBLIC_ADDRESS": "", "FORWARD_PORTS": f"{PORT}-{PORT + 1}"}


def _free_octets() -> tuple[int, int]:
    used = sh("ip", "-o", "-4", "addr", "show").stdout
    for _ in range(50):
        a, b = secrets.randbelow(256), secrets.randbelow(256)
        if f" 10.214.{a}." not in used and f" 10.215.{b}." not in used:
            return a, b
    raise RuntimeError("no free 10.214.x.0/30 and 10.215.x.0/24 subnets found")


def _sshd(ns: str, address: str, tmp: Path, authorized: Path) -> tuple[subprocess.Popen, str]:
    """Start an sshd inside the namespace on address:22; return it and its host key."""
    host_key = _keygen(tmp / "ssh_host_ed25519_key")
    config = tmp / "sshd_config"
    config.write_text("\n".join([
        "Port 22", f"ListenAddress {address}", f"HostKey {tmp / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        f"PidFile {tmp / 'sshd.pid'}", "StrictModes no", "LogLevel VERBOSE", "",
    ]))
    log = tmp / "sshd.log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, host_key


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tag = secrets.token_hex(3)
    box_ns, guest_ns = f"portalfwd-{tag}", f"portalgst-{tag}"
    out_root, out_box = f"pfo{tag}r", f"pfo{tag}b"  # outside link
    in_box, in_guest = f"pfi{tag}b", f"pfi{tag}g"  # private link
    a, b = _free_octets()
    root_side, box_side = f"10.214.{a}.1", f"10.214.{a}.2"
    gateway, guest = f"10.215.{b}.1", f"10.215.{b}.5"
    tmp = tmp_path_factory.mktemp("fwdlab")
    (tmp / "box").mkdir()
    (tmp / "guest").mkdir()
    daemons: list[subprocess.Popen] = []
    try:
        sh("ip", "netns", "add", box_ns)
        sh("ip", "netns", "add", guest_ns)
        box = ("ip", "netns", "exec", box_ns)
        gst = ("ip", "netns", "exec", guest_ns)
        sh("ip", "link", "add", out_root, "type", "veth", "peer", "name", out_box)
        sh("ip", "link", "set", out_box, "netns", box_ns)
        sh("ip", "addr", "add", f"{root_side}/30", "dev", out_root)
        sh("ip", "link", "set", out_root, "up")
        sh(*box, "ip", "link", "set", "lo", "up")
        sh(*box, "ip", "addr", "add", f"{box_side}/30", "dev", out_box)
        sh(*box, "ip", "link", "set", out_box, "up")
        sh(*box, "ip", "link", "add", in_box, "type", "veth", "peer", "name", in_guest)
        sh(*box, "ip", "link", "set", in_guest, "netns", guest_ns)
        sh(*box, "ip", "addr", "add", f"{gateway}/24", "dev", in_box)
        sh(*box, "ip", "link", "set", in_box, "up")
        sh(*gst, "ip", "link", "set", "lo", "up")
        sh(*gst, "ip", "addr", "add", f"{guest}/24", "dev", in_guest)
        sh(*gst, "ip", "link", "set", in_guest, "up")
        sh(*gst, "ip", "route", "add", "default", "via", gateway)
        # A NAT box routes; with FORWARD dropping, only the portal's accepts pass traffic.
        sh(*box, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh(*box, "iptables", "-w", "-P", "FORWARD", "DROP")

        client_pub = _keygen(tmp / "client_ed25519")
        authorized = tmp / "authorized_keys"
        authorized.write_text(client_pub + "\n")
        authorized.chmod(0o600)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        box_sshd, box_key = _sshd(box_ns, box_side, tmp / "box", authorized)
        daemons.append(box_sshd)
        guest_sshd, guest_key = _sshd(guest_ns, guest, tmp / "guest", authorized)
        daemons.append(guest_sshd)
        _wait_for_port(box_side, 22, box_sshd, tmp / "box" / "sshd.log")
        yield Lab(box_ns=box_ns, guest_ns=guest_ns, box_address=box_side,
                  guest_address=guest, box_host_key=box_key, guest_host_key=guest_key,
                  client_key=tmp / "client_ed25519", link=out_box)
    finally:
        remote.close_all()
        for proc in daemons:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in (guest_ns, box_ns):
            _kill_namespace_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", out_root, check=False)


@pytest.fixture(autouse=True)
def clean_box(lab: Lab) -> Iterator[None]:
    """Start and end every test with no portal rule on the box and no cached connection."""
    for table in ("nat", "filter"):
        lab.box_ns_run("iptables", "-w", "-t", table, "-F")
    remote.close_all()
    yield
    remote.close_all()


def refused(address: str, port: int) -> bool:
    """Tell whether a TCP connection to address:port is refused (nothing forwards there)."""
    try:
        socket.create_connection((address, port), timeout=3).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_the_boxs_address_refuses_the_port_without_a_forward(lab: Lab) -> None:
    assert refused(lab.box_address, PORT)
    # The box itself sees the guest's sshd: only the missing DNAT keeps the outside away.
    seen = lab.box_ns_run("ssh-keyscan", "-T", "5", "-t", "ed25519", lab.guest_address).stdout
    assert lab.guest_host_key.split()[1] in seen


def test_the_forwarded_port_reaches_the_guests_sshd_through_dnat(lab: Lab) -> None:
    backend = nat.backend_from_settings(lab.settings())
    forward = nat.PortForward(lab.box_address, PORT, lab.guest_address)
    backend.forward(forward)
    backend.forward(forward)  # idempotent: nothing added twice
    assert lab.rules("nat") == [
        f"-A PREROUTING -d {lab.box_address}/32 -p tcp -m tcp --dport {PORT} "
        "-m comment --comment portal-nat -j DNAT "
        f"--to-destination {lab.guest_address}:22"]
    assert sorted(lab.rules("filter")) == sorted([
        f"-A FORWARD -d {lab.guest_address}/32 -p tcp -m tcp --dport 22 "
        "-m comment --comment portal-nat -j ACCEPT",
        f"-A FORWARD -s {lab.guest_address}/32 -p tcp -m tcp --sport 22 "
        "-m comment --comment portal-nat -j ACCEPT"])
    # The outside reaches the guest's own sshd (its host key, its address), not the box's.
    assert fetch_host_key(lab.box_address, PORT, timeout=5).split() == \
        lab.guest_host_key.split()[:2]
    out = run(lab.through_port(), ["ip", "-o", "-4", "addr", "show"]).stdout
    assert f" {lab.guest_address}/24 " in out and lab.box_address not in out

    remote.close_all()
    backend.unforward(forward)
    assert lab.rules("nat") == [] and lab.rules("filter") == []
    assert refused(lab.box_address, PORT)


@pytest.mark.django_db
def test_the_portals_ssh_port_reaches_the_guest_and_release_closes_it(
        lab: Lab, site, settings) -> None:
    from networking.services import nat_resync, ssh_port_attach, ssh_port_detach

    settings.PORTAL_NAT = lab.settings()
    vlan = f.VLANFactory(name="fwd", tag=215, subnet=f"{lab.guest_address.rsplit('.', 1)[0]}.0/24")
    (vm,) = make_vms(site, 1)
    ip = PrivateIP.objects.create(vlan=vlan, address=lab.guest_address,
                                  mac="52:54:00:15:00:05", vm=vm)
    row = ssh_port_attach(vm=vm, private_ip=ip)
    assert (row.address, row.port) == (lab.box_address, PORT)
    assert SSHPort.objects.get(vm=vm).applied_at is not None
    out = run(lab.through_port(row.port), ["ip", "-o", "-4", "addr", "show"]).stdout
    assert f" {lab.guest_address}/24 " in out

    # Rules lost on the box (a reboot) come back with a resync.
    remote.close_all()
    lab.box_ns_run("iptables", "-w", "-t", "nat", "-F")
    lab.box_ns_run("iptables", "-w", "-t", "filter", "-F")
    assert refused(lab.box_address, PORT)
    assert nat_resync() == 1
    out = run(lab.through_port(row.port), ["ip", "-o", "-4", "addr", "show"]).stdout
    assert f" {lab.guest_address}/24 " in out

    remote.close_all()
    ssh_port_detach(vm=vm)
    assert lab.rules("nat") == [] and lab.rules("filter") == []
    assert refused(lab.box_address, PORT)
    assert not SSHPort.objects.filter(vm__isnull=False).exists()
    with pytest.raises(RemoteError):
        run(lab.through_port(row.port), ["true"])

"""Netns-tier tests of the iptables NAT backend over SSH to a real OpenSSH server.

A module fixture builds a throw-away NAT box: a network namespace `portalnat-<random>` joined to
the root namespace by a veth pair on 10.213.<random>.0/30, an sshd with its own config and keys
listening on the namespace's end, and an interface `pub0` inside the namespace for the public
aliases. Rules and aliases only ever change inside that namespace; the documentation addresses
(203.0.113.0/24) and 10.99.0.0/24 never leave it. Teardown stops sshd and deletes the namespace
and the veth pair.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts import remote
from hosts.remote import RemoteError, RemoteHost, fetch_host_key, run
from networking.nat import IptablesNat, NatMapping, backend_from_settings

pytestmark = pytest.mark.netns

PUBLIC_IF = "pub0"
MAPPING = NatMapping(public_ip="203.0.113.10", private_ip="10.99.0.5")
OTHER = NatMapping(public_ip="203.0.113.11", private_ip="10.99.0.6")
DNAT_LINE = (
    "-A PREROUTING -d 203.0.113.10/32 -m comment --comment portal-nat "
    "-j DNAT --to-destination 10.99.0.5"
)
SNAT_LINE = (
    "-A POSTROUTING -s 10.99.0.5/32 -m comment --comment portal-nat "
    "-j SNAT --to-source 203.0.113.10"
)
HAND_RULE = ["PREROUTING", "-d", "203.0.113.99/32", "-j", "DNAT", "--to-destination", "10.99.0.99"]
HAND_LINE = "-A PREROUTING -d 203.0.113.99/32 -j DNAT --to-destination 10.99.0.99"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


@dataclass(frozen=True)
class NatBox:
    """The namespace standing in for a NAT box, and how to reach its sshd."""

    namespace: str
    address: str
    host_key_pub: str
    client_key: Path
    other_key_pub: str
    sshd_log: Path

    def ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace, as the test (not through SSH)."""
        return sh("ip", "netns", "exec", self.namespace, *argv, check=check)

    def nat_rules(self) -> list[str]:
        """Return the `-A` lines of the namespace's nat table."""
        out = self.ns("iptables", "-w", "-t", "nat", "-S").stdout
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def aliases(self) -> list[str]:
        """Return the IPv4 addresses on pub0, as address/prefix."""
        out = self.ns("ip", "-o", "-4", "addr", "show", "dev", PUBLIC_IF).stdout
        return [line.split()[3] for line in out.splitlines()]

    def host(self, **overrides: object) -> RemoteHost:
        """Return the RemoteHost of the box's sshd, with fields overridden."""
        fields: dict[str, object] = {
            "address": self.address,
            "host_key": self.host_key_pub,
            "key_filename": str(self.client_key),
            "connect_timeout": 5,
            "command_timeout": 20,
            **overrides,
        }
        return RemoteHost(**fields)  # type: ignore[arg-type]


def _free_subnet() -> int:
    """Return a third octet whose 10.213.<octet>.0/30 no interface here uses."""
    used = sh("ip", "-o", "-4", "addr", "show").stdout
    for _ in range(50):
        octet = secrets.randbelow(256)
        if f" 10.213.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.213.x.0/30 subnet found")


def _wait_for_port(address: str, port: int, sshd: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"sshd exited with {sshd.returncode}: {text}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on {address}:{port} within 10 s")


def _kill_namespace_processes(namespace: str) -> None:
    """Kill what is left in the namespace: sshd's per-connection children outlive it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = sh("ip", "netns", "pids", namespace, check=False).stdout.split()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while (
            time.monotonic() < deadline
            and sh("ip", "netns", "pids", namespace, check=False).stdout.split()
        ):
            time.sleep(0.05)


def _keygen(path: Path) -> str:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def natbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatBox]:
    tag = secrets.token_hex(3)
    namespace = f"portalnat-{tag}"
    veth_host, veth_peer = f"pnat{tag}h", f"pnat{tag}n"
    octet = _free_subnet()
    host_side, ns_side = f"10.213.{octet}.1", f"10.213.{octet}.2"
    tmp = tmp_path_factory.mktemp("natbox")
    sshd: subprocess.Popen[bytes] | None = None
    log = tmp / "sshd.log"
    try:
        sh("ip", "netns", "add", namespace)
        sh("ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_peer)
        sh("ip", "link", "set", veth_peer, "netns", namespace)
        sh("ip", "addr", "add", f"{host_side}/30", "dev", veth_host)
        sh("ip", "link", "set", veth_host, "up")
        ns = ("ip", "netns", "exec", namespace)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{ns_side}/30", "dev", veth_peer)
        sh(*ns, "ip", "link", "set", veth_peer, "up")
        # A dummy interface when the kernel has the module; else a veth pair kept inside.
        if sh(*ns, "ip", "link", "add", PUBLIC_IF, "type", "dummy", check=False).returncode:
            sh(*ns, "ip", "link", "add", PUBLIC_IF, "type", "veth", "peer", "name", "pub0peer")
        sh(*ns, "ip", "link", "set", PUBLIC_IF, "up")

        host_key_pub = _keygen(tmp / "ssh_host_ed25519_key")
        client_pub = _keygen(tmp / "client_ed25519")
        other_pub = _keygen(tmp / "other_ed25519")
        authorized = tmp / "authorized_keys"
        authorized.write_text(client_pub + "\n")
        authorized.chmod(0o600)
        config = tmp / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "Port 22",
                    f"ListenAddress {ns_side}",
                    f"HostKey {tmp / 'ssh_host_ed25519_key'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    f"PidFile {tmp / 'sshd.pid'}",
                    "StrictModes no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd = subprocess.Popen(
            [*ns, "/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(ns_side, 22, sshd, log)
        yield NatBox(
            namespace=namespace,
            address=ns_side,
            host_key_pub=host_key_pub,
            client_key=tmp / "client_ed25519",
            other_key_pub=other_pub,
            sshd_log=log,
        )
    finally:
        remote.close_all()
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(5)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait(5)
        _kill_namespace_processes(namespace)
        sh("ip", "netns", "del", namespace, check=False)
        sh("ip", "link", "del", veth_host, check=False)


@pytest.fixture(autouse=True)
def clean_box(natbox: NatBox) -> None:
    """Start every test with an empty nat table and no address on pub0."""
    natbox.ns("iptables", "-w", "-t", "nat", "-F")
    natbox.ns("ip", "addr", "flush", "dev", PUBLIC_IF)


@pytest.fixture
def nat(natbox: NatBox) -> IptablesNat:
    return IptablesNat(natbox.host(), PUBLIC_IF)


def test_fetch_host_key_returns_the_generated_key(natbox: NatBox) -> None:
    recorded = fetch_host_key(natbox.address, 22, timeout=5)
    assert recorded.split() == natbox.host_key_pub.split()[:2]
    assert recorded.startswith("ssh-ed25519 ")


def test_run_passes_arguments_literally_to_the_remote_shell(natbox: NatBox) -> None:
    words = ["a b", "$(touch /tmp/portal-pwned)", "it's", ";", "*", "", "--", "x\ny"]
    result = run(natbox.host(), ["printf", "%s|", *words])
    assert result.stdout == "".join(word + "|" for word in words)
    assert not Path("/tmp/portal-pwned").exists()


def test_apply_adds_the_two_rules_and_the_alias(natbox: NatBox) -> None:
    nat = backend_from_settings(
        {
            "BACKEND": "iptables-ssh",
            "ADDRESS": natbox.address,
            "PORT": 22,
            "USERNAME": "root",
            "HOST_KEY": natbox.host_key_pub,
            "KEY_FILE": str(natbox.client_key),
            "INTERFACE": PUBLIC_IF,
        }
    )
    assert isinstance(nat, IptablesNat)
    nat.apply(MAPPING)
    assert natbox.nat_rules() == [DNAT_LINE, SNAT_LINE]
    assert natbox.aliases() == ["203.0.113.10/32"]


def test_apply_twice_adds_nothing(natbox: NatBox, nat: IptablesNat) -> None:
    nat.apply(MAPPING)
    rules = natbox.ns("iptables", "-w", "-t", "nat", "-S").stdout
    nat.apply(MAPPING)
    assert natbox.ns("iptables", "-w", "-t", "nat", "-S").stdout == rules
    assert natbox.aliases() == ["203.0.113.10/32"]


def test_remove_removes_exactly_what_apply_added(natbox: NatBox, nat: IptablesNat) -> None:
    natbox.ns("iptables", "-w", "-t", "nat", "-A", *HAND_RULE)
    natbox.ns("ip", "addr", "add", "203.0.113.99/32", "dev", PUBLIC_IF)
    nat.apply(MAPPING)
    assert len(natbox.nat_rules()) == 3
    nat.remove(MAPPING)
    assert natbox.nat_rules() == [HAND_LINE]
    assert natbox.aliases() == ["203.0.113.99/32"]
    nat.remove(MAPPING)  # already gone: nothing to do, no error
    assert natbox.nat_rules() == [HAND_LINE]


def test_clear_removes_every_portal_rule_and_alias(natbox: NatBox, nat: IptablesNat) -> None:
    natbox.ns("iptables", "-w", "-t", "nat", "-A", *HAND_RULE)
    natbox.ns("ip", "addr", "add", "203.0.113.99/32", "dev", PUBLIC_IF)
    nat.apply(MAPPING)
    nat.apply(OTHER)
    assert len(natbox.nat_rules()) == 5
    nat.clear([MAPPING, OTHER])
    assert natbox.nat_rules() == [HAND_LINE]
    assert natbox.aliases() == ["203.0.113.99/32"]
    nat.clear([MAPPING, OTHER])  # nothing left to clear
    assert natbox.nat_rules() == [HAND_LINE]


def test_wrong_host_key_is_refused_and_changes_nothing(natbox: NatBox) -> None:
    remote.close_all()
    log_before = len(natbox.sshd_log.read_text())
    impostor = IptablesNat(natbox.host(host_key=natbox.other_key_pub), PUBLIC_IF)
    with pytest.raises(RemoteError, match="not the recorded one"):
        impostor.apply(MAPPING)
    assert natbox.nat_rules() == []
    assert natbox.aliases() == []
    # The client gave up before authenticating: sshd saw a connection but no accepted key.
    new_log = natbox.sshd_log.read_text()[log_before:]
    assert "Connection from" in new_log
    assert "Accepted publickey" not in new_log


def test_command_failure_raises_remote_error_with_stderr(natbox: NatBox) -> None:
    missing_if = IptablesNat(natbox.host(), "nosuch0")
    with pytest.raises(RemoteError) as caught:
        missing_if.apply(MAPPING)
    assert caught.value.exit_status not in (None, 0)
    assert "nosuch0" in caught.value.stderr
    assert "ip -o addr show dev nosuch0" in caught.value.message
    assert natbox.nat_rules() == []

    with pytest.raises(RemoteError) as caught:
        run(natbox.host(), ["ls", "/nonexistent-portal-path"])
    assert caught.value.exit_status == 2
    assert "No such file or directory" in caught.value.stderr
    assert "No such file or directory" in caught.value.message

"""DHCP backends: the ISC one writes exactly one file per host entry over SSH, idempotently."""

from __future__ import annotations

import pytest

from hosts import remote
from hosts.remote import RemoteHost, Result
from networking.dhcp import DhcpEntry, IscDhcpSSH, LibvirtDhcp, NoDhcp, backend_from_settings

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICZsYYKptYf398DihSK15P3/6Jkyg9IjX0h9yiRuC95u"
ENTRY = DhcpEntry(network="default", mac="52:54:00:aa:bb:cc", ip="10.0.0.5", hostname="web1")


class FakeBox:
    """A DHCP server's file system, reached through hosts.remote.run."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.commands: list[list[str]] = []

    def run(self, host, argv, *, check=True, timeout=None, stdin=None):
        self.commands.append(list(argv))
        cmd, args = argv[0], argv[1:]
        if cmd == "cat":
            text = self.files.get(args[0])
            return Result(stdout=text or "", stderr="", exit_status=0 if text else 1)
        if cmd == "test":
            return Result("", "", 0 if args[1] in self.files else 1)
        if cmd == "tee":
            self.files[args[0]] = stdin
        if cmd == "rm":
            self.files.pop(args[1], None)
        return Result("", "", 0)


@pytest.fixture
def box(monkeypatch):
    fake = FakeBox()
    monkeypatch.setattr(remote, "run", fake.run)
    return fake


def isc() -> IscDhcpSSH:
    host = RemoteHost(address="dhcp.example.org", host_key=KEY, key_filename="/k")
    return IscDhcpSSH(host, "/etc/dhcp/portal.d", ["systemctl", "restart", "isc-dhcp-server"])


def test_isc_add_writes_the_host_block_and_reloads_once(box):
    backend = isc()
    backend.add("qemu:///system", ENTRY)
    assert box.files == {"/etc/dhcp/portal.d/web1.conf":
                         "host web1 { hardware ethernet 52:54:00:aa:bb:cc; "
                         "fixed-address 10.0.0.5; }\n"}
    assert box.commands.count(["systemctl", "restart", "isc-dhcp-server"]) == 1
    box.commands.clear()
    backend.add("qemu:///system", ENTRY)
    assert box.commands == [["cat", "/etc/dhcp/portal.d/web1.conf"]]


def test_isc_remove_deletes_the_file_and_is_idempotent(box):
    backend = isc()
    backend.add("qemu:///system", ENTRY)
    backend.remove("qemu:///system", ENTRY)
    assert box.files == {}
    box.commands.clear()
    backend.remove("qemu:///system", ENTRY)
    assert box.commands == [["test", "-e", "/etc/dhcp/portal.d/web1.conf"]]


@pytest.mark.parametrize("name", ["../etc/passwd", "web 1", "Web1", "a;b"])
def test_isc_refuses_a_host_name_that_is_not_a_vm_name(box, name):
    with pytest.raises(ValueError):
        isc().add("qemu:///system", DhcpEntry("default", ENTRY.mac, ENTRY.ip, name))
    assert box.commands == []


@pytest.mark.parametrize(("config_dir", "reload"), [
    ("relative/dir", ["true"]), ("/etc/../tmp", ["true"]), ("/etc/dhcp", []),
    ("/etc/dhcp", "systemctl restart dhcpd"),
])
def test_isc_refuses_bad_settings(config_dir, reload):
    with pytest.raises(ValueError):
        IscDhcpSSH(RemoteHost(address="x"), config_dir, reload)


def test_backends_are_chosen_by_settings():
    assert isinstance(backend_from_settings({"BACKEND": "libvirt"}), LibvirtDhcp)
    assert isinstance(backend_from_settings({"BACKEND": "none"}), NoDhcp)
    chosen = backend_from_settings({"BACKEND": "isc-ssh", "ADDRESS": "dhcp.example.org",
                                    "HOST_KEY": KEY, "KEY_FILE": "/k",
                                    "CONFIG_DIR": "/etc/dhcp/portal.d", "RELOAD": ["true"]})
    assert isinstance(chosen, IscDhcpSSH) and chosen.host.address == "dhcp.example.org"
    with pytest.raises(ValueError, match="unknown DHCP backend"):
        backend_from_settings({"BACKEND": "carrier-pigeon"})

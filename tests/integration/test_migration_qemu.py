"""Hypervisor tier: migrating real qemu guests between this machine's libvirtd and a second one.

The second host (tests/integration/second_host.py) is a network and mount namespace with its
own libvirtd, reached over qemu+tcp on a veth pair; the guests' disks sit in a folder under
/var/tmp that both hosts see, as on an NFS datastore. The demo guest runs under TCG.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.virt import Hypervisor, SerialConsole, VirtError, close_all
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from tests.integration.qemu import URI, unique
from tests.integration.second_host import SUBNET, SecondHost, second_host  # noqa: F401
from vms.cloudinit import SeedUser, build_seed_iso, hash_password

pytestmark = pytest.mark.hypervisor

NETWORK = "portalmig-net"  # defined alike on both hosts, in their own network namespaces
USER, PASSWORD = "student", "Tr0ub4dor&3 migrate"
BOOT_TIMEOUT = 180


def _network_xml() -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = NETWORK
    ET.SubElement(root, "bridge", name="pmigbr0")
    ET.SubElement(root, "ip", address="10.233.0.1", netmask="255.255.255.0")
    return ET.tostring(root, encoding="unicode")


@pytest.fixture(scope="module")
def hosts(second_host: SecondHost) -> Iterator[tuple[Hypervisor, Hypervisor, SecondHost]]:  # noqa: F811
    """Return both hosts' adapters, each with the guests' network; remove it afterwards."""
    close_all()
    here, there = Hypervisor(URI), Hypervisor(second_host.uri)
    for hv in (here, there):
        hv.ensure_network(_network_xml())
    yield here, there, second_host
    subprocess.run(["virsh", "-c", URI, "net-destroy", NETWORK], capture_output=True,
                   check=False)
    subprocess.run(["virsh", "-c", URI, "net-undefine", NETWORK], capture_output=True,
                   check=False)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder both hosts see: the stand-in for a datastore on NFS."""
    path = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def name(hosts) -> Iterator[str]:
    """A fresh domain name; no such domain survives the test on either host."""
    domain = unique()
    yield domain
    for hv in hosts[:2]:
        try:
            hv.snapshot_metadata_drop(domain)
        except VirtError:
            pass
        hv.undefine_domain(domain)


def _define(hv: Hypervisor, name: str, workdir: Path, base: Path, *, network: str = NETWORK,
            seed: bool = True) -> None:
    disk = workdir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(disk)], check=True, capture_output=True, timeout=60)
    disk.chmod(0o666)
    seed_path = None
    if seed:
        seed_path = workdir / f"{name}-seed.iso"
        seed_path.write_bytes(build_seed_iso(
            instance_id=f"iid-{name}", hostname="migrant", mac="52:54:00:23:10:01",
            user=SeedUser(name=USER, password_hash=hash_password(PASSWORD), ssh_keys=(),
                          gecos="Migrant")))
        seed_path.chmod(0o644)
    hv.define_domain(build_domain_xml(DomainSpec(
        name=name, uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1, memory_mib=192,
        disk_path=str(disk), network=network, mac="52:54:00:23:10:01",
        seed_path=str(seed_path) if seed_path else None, vnc_port=5990,
        vnc_listen="127.0.0.1")))


class Console:
    """The guest's serial console through libvirt, read by a thread into one buffer."""

    def __init__(self, uri: str, name: str) -> None:
        self.console = SerialConsole(uri, name)
        self.seen = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self.console.read():
            with self._lock:
                self.seen += chunk.decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the output seen matches; return the match and forget what it ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                match = re.search(pattern, self.seen)
                if match:
                    self.seen = self.seen[match.end():]
                    return match
            time.sleep(0.2)
        raise AssertionError(f"console never showed {pattern!r}; got {self.seen[-800:]!r}")

    def send(self, text: str) -> None:
        """Type text at the console."""
        self.console.write(text.encode())

    def uptime(self) -> float:
        """Return the guest's uptime, asked through its logged-in shell."""
        self.send("echo UP=$(cut -d' ' -f1 /proc/uptime)\r")
        return float(self.expect(r"UP=([0-9.]+)").group(1))

    def close(self) -> None:
        """Close the console; the guest keeps running."""
        self.console.close()


def _login(console: Console) -> None:
    console.send("\r")
    console.expect(r"migrant login:", timeout=BOOT_TIMEOUT)
    console.send(f"{USER}\r")
    console.expect("Password:")
    console.send(f"{PASSWORD}\r")
    console.expect(r"\$ ")


def test_a_running_guest_moves_there_and_back_live_with_its_snapshot(
        hosts, name, shared_dir, guest_image):
    here, there, second = hosts
    _define(here, name, shared_dir, guest_image)
    here.start(name)
    console = Console(URI, name)
    _login(console)
    before = console.uptime()
    console.close()
    here.snapshot_create(name, "snap-before-move", "taken before the move")
    seen: list[int] = []

    started = time.monotonic()
    moved = here.migrate_live(name, second.uri, shared=True, vnc_port=5991,
                              vnc_listen="127.0.0.1",
                              progress=lambda job: seen.append(job.processed))
    took = time.monotonic() - started
    print(f"live migration of the demo guest (192 MiB, TCG): {took:.1f} s")
    assert moved.facts.state == "running" and not moved.snapshot_problem
    assert seen and max(seen) > 0  # libvirt's job was read while it copied
    assert here.find_domain(name) is None
    assert there.snapshot_names(name) == ["snap-before-move"]
    assert there.snapshot_metadata(name).current == "snap-before-move"
    assert "port='5991'" in there.domain_xml(name)
    console = Console(second.uri, name)
    middle = console.uptime()  # the same shell, still logged in: the guest never restarted
    console.close()
    assert middle > before

    back = there.migrate_live(name, URI, shared=True, vnc_port=5990, vnc_listen="127.0.0.1",
                              migrate_uri=f"tcp://{SUBNET}.1")
    assert back.facts.state == "running"
    assert there.find_domain(name) is None
    assert here.snapshot_names(name) == ["snap-before-move"]
    console = Console(URI, name)
    after = console.uptime()
    console.close()
    assert after > middle


def test_a_stopped_vm_moves_by_definition_with_its_snapshot(hosts, name, shared_dir,
                                                            guest_image):
    here, there, second = hosts
    _define(here, name, shared_dir, guest_image, seed=False)
    here.snapshot_create(name, "snap-stopped")
    moved = here.migrate_cold(name, second.uri, shared=True, vnc_port=5992,
                              vnc_listen="127.0.0.1")
    assert moved.state == "shutoff"
    assert here.find_domain(name) is None
    assert there.snapshot_names(name) == ["snap-stopped"]
    # It boots there from the same disk.
    assert there.start(name).state == "running"


def test_a_destination_without_the_network_leaves_the_guest_on_its_source(
        hosts, name, shared_dir, guest_image):
    here, there, second = hosts
    _define(here, name, shared_dir, guest_image, network="default", seed=False)
    here.start(name)
    here.snapshot_create(name, "snap-stays")
    with pytest.raises(VirtError, match="cannot migrate domain"):
        here.migrate_live(name, second.uri, shared=True, vnc_port=5993,
                          vnc_listen="127.0.0.1")
    assert here.domain(name).state == "running"
    assert here.snapshot_names(name) == ["snap-stays"]
    assert here.snapshot_metadata(name).current == "snap-stays"
    assert there.find_domain(name) is None

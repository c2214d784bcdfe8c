"""Hypervisor tier: the demo guest is built, boots on qemu:///system and behaves like a VM.

The built image is checked first: a bootable disk holding kernel, initramfs and drivers. Then
one guest boots for the module (TCG, the portal's own domain XML with a NoCloud seed CD-ROM)
on libvirt's `default` network with a DHCP host entry; the tests log in on the serial console
and over SSH, hot-plug a disk, and end with an ACPI shutdown. They run in file order: the
last one powers the guest off.
"""

from __future__ import annotations

import gzip
import ipaddress
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hosts import guest_image as gi
from hosts.virt import Hypervisor, close_all
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from tests.integration.guest import (
    SerialSession,
    read_cpio,
    read_log,
    ssh_connect,
    ssh_run,
    use_serial_socket,
    wait_for_log,
)
from tests.integration.qemu import URI, domstate, unique, virsh
from vms.cloudinit import SeedUser, build_seed_iso, hash_password

pytestmark = pytest.mark.hypervisor

NETWORK = "default"
USER = "student"
PASSWORD = "Tr0ub4dor&3 guest"
SHUTDOWN_TIMEOUT = 60


@dataclass(frozen=True)
class Guest:
    """A running demo guest and what the test knows about it."""

    name: str
    hostname: str
    mac: str
    ip: str
    key: paramiko.PKey
    workdir: Path
    log: Path
    socket: Path


def _new_key() -> tuple[paramiko.PKey, str]:
    """Return a fresh Ed25519 key for paramiko and its authorized_keys line."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{public} test key #1"


def _free_ip(hv: Hypervisor) -> str:
    """Return an address of the default network that no DHCP host entry or lease holds."""
    taken = {ip for _, ip, _ in hv.network_dhcp_hosts(NETWORK)}
    taken |= set(virsh("net-dhcp-leases", NETWORK).stdout.split())
    taken = {t.split("/")[0] for t in taken}
    candidates = [str(ipaddress.IPv4Address("192.168.122.0") + n) for n in range(200, 251)]
    free = [ip for ip in candidates if ip not in taken]
    assert free, "no free address left in 192.168.122.200-250"
    return random.choice(free)


@pytest.fixture(scope="module")
def guest(guest_image: Path) -> Iterator[Guest]:
    """Boot one demo guest with a seed and a DHCP host entry; remove it all afterwards."""
    close_all()
    hv = Hypervisor(URI)
    hv.ensure_network_active(NETWORK)
    workdir = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    workdir.chmod(0o755)  # qemu runs as libvirt-qemu and must reach the images
    name = unique()
    hostname = f"guest-{uuid.uuid4().hex[:6]}"
    mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
    ip = _free_ip(hv)
    key, public = _new_key()
    disk = workdir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest_image), "-F", "qcow2",
         str(disk)], check=True, capture_output=True, timeout=60,
    )
    seed = workdir / "seed.iso"
    seed.write_bytes(build_seed_iso(
        instance_id=f"iid-{name}", hostname=hostname, mac=mac,
        user=SeedUser(name=USER, password_hash=hash_password(PASSWORD), ssh_keys=(public,),
                      gecos="Sam O'Student, #1"),
    ))
    for path in (disk, seed):
        path.chmod(0o644)
    log, sock = workdir / "serial.log", workdir / "serial.sock"
    spec = DomainSpec(
        name=name, uuid=str(uuid.uuid4()), domain_type="qemu", vcpus=1, memory_mib=256,
        disk_path=str(disk), network=NETWORK, mac=mac, seed_path=str(seed),
    )
    hv.network_dhcp_host_add(NETWORK, mac, ip, hostname)
    try:
        hv.define_domain(use_serial_socket(build_domain_xml(spec), sock, log))
        started = time.monotonic()
        hv.start(name)
        wait_for_log(log, rf"{hostname} login:")
        print(f"demo guest: login prompt {time.monotonic() - started:.1f} s after start")
        yield Guest(name=name, hostname=hostname, mac=mac, ip=ip, key=key, workdir=workdir,
                    log=log, socket=sock)
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
        hv.network_dhcp_host_remove(NETWORK, mac)
        close_all()
        shutil.rmtree(workdir, ignore_errors=True)


def test_built_image_is_a_bootable_disk_with_kernel_initramfs_and_drivers(
    guest_image: Path, tmp_path: Path
) -> None:
    assert guest_image.stat().st_mode & 0o004, "qemu must be able to read the image"
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(guest_image),
                    str(raw)], check=True, capture_output=True, timeout=120)
    with open(raw, "rb") as handle:
        sector = handle.read(512)
    assert sector[510:] == b"\x55\xaa" and sector[446] == 0x80
    fat = f"{raw}@@{gi.PARTITION_OFFSET}"
    listing = subprocess.run(["mdir", "-a", "-b", "-i", fat, "::"], check=True, capture_output=True,
                             text=True, timeout=30).stdout
    for name in ("vmlinuz", "initrd.gz", "syslinux.cfg", "ldlinux.sys", "ldlinux.c32"):
        assert f"::/{name}" in listing.splitlines(), name
    subprocess.run(["mcopy", "-i", fat, "::initrd.gz", str(tmp_path / "initrd.gz")],
                   check=True, capture_output=True, timeout=30)
    entries = read_cpio(gzip.decompress((tmp_path / "initrd.gz").read_bytes()))
    assert entries["init"][1] == (gi.GUEST_DIR / "init").read_bytes()
    assert entries["etc/shadow"][0] & 0o777 == 0o600
    for needed in ("bin/busybox", "usr/sbin/dropbear", "lib64/ld-linux-x86-64.so.2"):
        assert needed in entries, needed
    assert entries["sbin/getty"][1] == b"../bin/busybox"
    (dep_name,) = [n for n in entries if n.endswith("/modules.dep")]
    deps = entries[dep_name][1].decode()
    for module in ("ahci.ko", "virtio_net.ko", "sr_mod.ko", "isofs.ko", "button.ko"):
        assert f"/{module}:" in deps, module


def test_serial_console_shows_the_login_prompt_with_the_seeded_hostname(guest: Guest) -> None:
    text = read_log(guest.log)
    assert f"{guest.hostname} login:" in text
    assert f"nocloud: added user {USER}" in text


def test_seeded_key_logs_in_over_ssh_and_hostname_answers(guest: Guest) -> None:
    client = ssh_connect(guest.ip, USER, key=guest.key)
    try:
        assert ssh_run(client, "hostname").strip() == guest.hostname
        assert ssh_run(client, "id -un").strip() == USER
        passwd = ssh_run(client, f"grep '^{USER}:' /etc/passwd").strip()
        assert passwd.split(":")[4] == "Sam O'Student, #1"
    finally:
        client.close()


def test_guest_holds_the_address_of_its_dhcp_entry(guest: Guest) -> None:
    client = ssh_connect(guest.ip, USER, key=guest.key)
    try:
        addresses = ssh_run(client, "ip -4 -o addr show dev eth0")
        routes = ssh_run(client, "ip -4 route")
        resolv = ssh_run(client, "cat /etc/resolv.conf")
    finally:
        client.close()
    assert f"inet {guest.ip}/24" in addresses
    assert "default via 192.168.122.1" in routes
    assert "nameserver 192.168.122.1" in resolv
    leases = virsh("net-dhcp-leases", NETWORK, "--mac", guest.mac).stdout
    assert f"{guest.ip}/24" in leases


def test_password_hash_logs_in_over_ssh_and_a_wrong_password_does_not(guest: Guest) -> None:
    client = ssh_connect(guest.ip, USER, password=PASSWORD)
    try:
        assert ssh_run(client, "id -un").strip() == USER
    finally:
        client.close()
    with pytest.raises(paramiko.AuthenticationException):
        ssh_connect(guest.ip, USER, password="not the password", timeout=0)


def test_password_logs_in_on_the_serial_console(guest: Guest) -> None:
    serial = SerialSession(guest.socket)
    try:
        serial.send("\r")
        serial.expect(rf"{guest.hostname} login:")
        serial.send(f"{USER}\r")
        serial.expect("Password:")
        serial.send(f"{PASSWORD}\r")
        serial.expect(r"\$ ")
        serial.send("echo logged-in-as-$(id -un)\r")
        serial.expect(f"logged-in-as-{USER}")
        serial.send("exit\r")
        serial.expect(rf"{guest.hostname} login:")
    finally:
        serial.close()


def test_hot_plugged_disk_appears_in_the_guest_and_detaches(guest: Guest) -> None:
    extra = guest.workdir / "extra.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(extra), "16M"],
                   check=True, capture_output=True, timeout=60)
    extra.chmod(0o644)
    hv = Hypervisor(URI)
    client = ssh_connect(guest.ip, USER, key=guest.key)
    try:
        assert "vdb" not in ssh_run(client, "ls /sys/block").split()
        assert hv.attach_disk(guest.name, str(extra), "vdb") == "live"
        deadline = time.monotonic() + 30
        while "vdb" not in ssh_run(client, "ls /sys/block").split():
            assert time.monotonic() < deadline, "the hot-plugged disk never appeared"
            time.sleep(0.5)
        assert ssh_run(client, "cat /sys/block/vdb/size").strip() == str(16 * 1024 * 2)
        assert hv.detach_disk(guest.name, str(extra), unplug_timeout=30) == "live"
        assert "vdb" not in ssh_run(client, "ls /sys/block").split()
    finally:
        client.close()
    assert str(extra) not in virsh("dumpxml", guest.name).stdout


def test_acpi_shutdown_powers_the_guest_off(guest: Guest) -> None:
    virsh("shutdown", guest.name, "--mode", "acpi")
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    while domstate(guest.name) != "shut off":
        assert time.monotonic() < deadline, (
            f"still {domstate(guest.name)!r} {SHUTDOWN_TIMEOUT} s after the ACPI power button"
        )
        time.sleep(0.5)
    assert "guest: powering off" in read_log(guest.log)

"""The demo guest in tests: a session fixture for its image, and ways to watch and reach it.

The image is built once (hosts.guest_image caches it by content) in a 0755 folder under
/var/tmp that qemu, running as another user, can read. Set PORTAL_GUEST_CACHE to move it.
A test domain gets its first serial port as a unix socket with a log file, so a test can
read everything the guest printed since boot and type at its login prompt.
"""

from __future__ import annotations

import os
import re
import socket
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import paramiko
import pytest

from hosts.guest_image import ensure_guest_image

GUEST_CACHE = Path(os.environ.get("PORTAL_GUEST_CACHE", "/var/tmp/portal-guest"))
BOOT_TIMEOUT = 120  # seconds; TCG on a busy two-core machine


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """Return the demo guest's qcow2 (world-readable), building it once if needed."""
    GUEST_CACHE.mkdir(parents=True, exist_ok=True)
    GUEST_CACHE.chmod(0o755)  # qemu runs as libvirt-qemu and must reach the image
    return ensure_guest_image(GUEST_CACHE)


def use_serial_socket(domain_xml: str, socket_path: Path, log_path: Path) -> str:
    """Return domain_xml with its first serial port on a unix socket, logged to log_path."""
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    assert devices is not None
    for tag in ("serial", "console"):
        for elem in devices.findall(tag):
            devices.remove(elem)
    serial = ET.SubElement(devices, "serial", type="unix")
    ET.SubElement(serial, "source", mode="bind", path=str(socket_path))
    ET.SubElement(serial, "log", file=str(log_path), append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="unix")
    ET.SubElement(console, "source", mode="bind", path=str(socket_path))
    ET.SubElement(console, "target", type="serial", port="0")
    return ET.tostring(root, encoding="unicode")


def read_log(log_path: Path) -> str:
    """Return what the guest printed on its serial port so far (empty before it starts)."""
    try:
        return log_path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def wait_for_log(log_path: Path, pattern: str, timeout: float = BOOT_TIMEOUT) -> re.Match[str]:
    """Wait until the serial log matches the regular expression; return the match."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, read_log(log_path))
        if match:
            return match
        if time.monotonic() > deadline:
            tail = read_log(log_path)[-2000:]
            raise AssertionError(f"serial never showed {pattern!r} in {timeout} s:\n{tail}")
        time.sleep(0.2)


class SerialSession:
    """Type at the guest's serial console through its unix socket and read the answers."""

    def __init__(self, socket_path: Path, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(0.2)
        self.sock.connect(str(socket_path))
        self.timeout = timeout
        self.seen = ""

    def send(self, text: str) -> None:
        """Type text (use '\\r' for Enter)."""
        self.sock.sendall(text.encode())

    def expect(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """Read until the output since the last match matches pattern; return the match."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            match = re.search(pattern, self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"serial never showed {pattern!r}; got {self.seen[-1000:]!r}")
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"serial closed before {pattern!r}; got {self.seen!r}")
            self.seen += chunk.decode("utf-8", "replace")

    def close(self) -> None:
        """Close the socket; the guest keeps running."""
        self.sock.close()


def ssh_connect(
    ip: str,
    username: str,
    *,
    key: paramiko.PKey | None = None,
    password: str | None = None,
    timeout: float = 90,
) -> paramiko.SSHClient:
    """Return an SSH client logged in to the guest, retrying while it boots."""
    deadline = time.monotonic() + timeout
    while True:
        client = paramiko.SSHClient()
        # A fresh guest makes its host key on first use; there is nothing to compare with.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507
        try:
            client.connect(
                ip, username=username, pkey=key, password=password, timeout=5,
                banner_timeout=20, auth_timeout=20, look_for_keys=False, allow_agent=False,
            )
            return client
        except (OSError, paramiko.SSHException) as exc:
            client.close()
            if isinstance(exc, paramiko.AuthenticationException) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def ssh_run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> str:
    """Run a command in the guest and return its output; fail on a non-zero exit."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {stderr.read().decode()}"
    return out


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """Return name -> (mode, data, (rdev major, minor)) of a newc archive."""
    entries = {}
    offset = 0
    while True:
        assert data[offset:offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, name_size = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + name_size - 1].decode()
        body = name_start + name_size + (-(110 + name_size) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body:body + size], rdev)
        offset = body + size + (-size % 4)

"""A second libvirt host on this machine, for migration tests of the hypervisor tier.

The second host is a network namespace joined to the root one by a veth pair on a /30 no
libvirt network uses, in its own mount namespace where /run/libvirt, /var/lib/libvirt,
/var/log/libvirt, /var/cache/libvirt and /etc/libvirt are private folders (the last a copy of
this machine's, whose libvirtd.conf sets another host_uuid, listens on TCP without
authentication on the veth address only, and whose qemu.conf puts no domain in cgroups). Its
own virtlogd and libvirtd run there with pid files under its /run/libvirt; the portal reaches
it at `qemu+tcp://<address>/system`. /var/tmp is the same in both, so a folder there stands
for a datastore on NFS. `second_host` (module scope) builds it and tears everything down.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts.virt import close_all, get_connection

SUBNET = "10.231.0"  # a /30: .1 this machine, .2 the second host
# Each private folder of the second host, and its name under the host's own root.
PRIVATE_DIRS = {"/run/libvirt": "run", "/var/lib/libvirt": "lib", "/var/log/libvirt": "log",
                "/var/cache/libvirt": "cache", "/etc/libvirt": "etc"}
START_TIMEOUT = 60


@dataclass(frozen=True)
class SecondHost:
    """The second host: its namespace, address, libvirt URI and private folders."""

    netns: str
    address: str
    uri: str
    root: Path
    host_uuid: str

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv in the second host's network and mount namespaces."""
        pid = (self.root / "run/libvirtd.pid").read_text().strip()
        return subprocess.run(["nsenter", "-t", pid, "-n", "-m", *argv], check=check,
                              capture_output=True, text=True, timeout=60)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


def _config(etc: Path, address: str, host_uuid: str) -> None:
    """Write the copy of /etc/libvirt the second libvirtd reads."""
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    # Networks, pools and domains this machine autostarts are not the second host's.
    for sub in ("qemu/networks/autostart", "storage/autostart"):
        shutil.rmtree(etc / sub, ignore_errors=True)
    for sub in ("qemu", "storage"):
        for item in (etc / sub).glob("*.xml"):
            item.unlink()
    networks = etc / "qemu/networks"
    for item in networks.glob("*.xml") if networks.exists() else ():
        item.unlink()
    conf = etc / "libvirtd.conf"
    conf.write_text(conf.read_text() + (
        f'\nhost_uuid = "{host_uuid}"\nlisten_tls = 0\nlisten_tcp = 1\n'
        f'auth_tcp = "none"\nlisten_addr = "{address}"\n'))
    qemu = etc / "qemu.conf"
    qemu.write_text(qemu.read_text() + "\ncgroup_controllers = [ ]\n")


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def second_host_start() -> SecondHost:
    """Build the namespaces, start virtlogd and libvirtd there; wait until libvirt answers."""
    tag = uuid.uuid4().hex[:6]
    netns, outside, inside = f"portalmig-{tag}", f"pmig{tag}a", f"pmig{tag}b"
    address = f"{SUBNET}.2"
    root = Path(tempfile.mkdtemp(prefix="portalmig-", dir="/var/tmp"))
    root.chmod(0o755)
    host_uuid = str(uuid.uuid4())
    _sh("ip", "netns", "add", netns)
    _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
    _sh("ip", "link", "set", inside, "netns", netns)
    _sh("ip", "addr", "add", f"{SUBNET}.1/30", "dev", outside)
    _sh("ip", "link", "set", outside, "up")
    for argv in (("ip", "addr", "add", f"{address}/30", "dev", inside),
                 ("ip", "link", "set", inside, "up"), ("ip", "link", "set", "lo", "up")):
        _sh("ip", "netns", "exec", netns, *argv)
    mounts = []
    for private, name in PRIVATE_DIRS.items():
        mine = root / name
        if private == "/etc/libvirt":
            _config(mine, address, host_uuid)
        else:
            mine.mkdir(mode=0o755)
        mounts.append(f"mount --bind {mine} {private}")
    script = " && ".join([
        *mounts,
        "virtlogd -d -p /run/libvirt/virtlogd.pid",
        "libvirtd -d --listen -p /run/libvirt/libvirtd.pid",
    ])
    _sh("ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
        "sh", "-c", script)
    host = SecondHost(netns=netns, address=address, uri=f"qemu+tcp://{address}/system",
                      root=root, host_uuid=host_uuid)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        probe = _sh("virsh", "-c", host.uri, "version", check=False)
        if probe.returncode == 0:
            return host
        if time.monotonic() > deadline:
            second_host_stop(host, outside)
            raise AssertionError(f"the second libvirtd never answered at {host.uri}: "
                                 f"{probe.stderr}")
        time.sleep(0.5)


def second_host_stop(host: SecondHost, outside: str | None = None) -> None:
    """Stop the second host's domains and daemons; remove its namespaces and folders."""
    close_all()
    try:
        conn = get_connection(host.uri)
        for dom in conn.listAllDomains(0):
            if dom.isActive():
                dom.destroy()
        for net in conn.listAllNetworks(0):
            if net.isActive():
                net.destroy()
    except Exception:  # noqa: BLE001, S110 - a half-started host has nothing to stop
        pass
    close_all()
    for name in ("libvirtd.pid", "virtlogd.pid"):
        pid = _alive(host.root / "run" / name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            # The daemon removes its pid file before it has finished exiting: watch the pid.
            for _ in range(100):
                if not _running(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
    _sh("ip", "netns", "del", host.netns, check=False)
    if outside is None:
        links = _sh("ip", "-o", "link", "show", check=False).stdout
        match = re.search(rf"(pmig{host.netns[-6:]}a)[@:]", links)
        outside = match.group(1) if match else None
    if outside:
        _sh("ip", "link", "del", outside, check=False)
    shutil.rmtree(host.root, ignore_errors=True)


@pytest.fixture(scope="module")
def second_host() -> Iterator[SecondHost]:
    """Start a second libvirt host for the module's tests and tear it all down afterwards."""
    host = second_host_start()
    try:
        yield host
    finally:
        second_host_stop(host)

"""Browser tier walkthroughs: the real portal, as `make demo` runs it, and the browser.

The session fixture `portal` starts the portal in subprocesses on a fresh directory under /var/tmp
(qemu runs as another user and must reach the images): `migrate`, `schedules_ensure`,
`collectstatic`, `demo_setup`, then `runserver` and one `qcluster` on the ORM broker and a file
SQLite database; `browser` is one Chromium for the session. tests/browser/conftest.py offers both
to tests/browser/test_walkthrough_*.py, which walk the approval chain and a VM's whole life as the
four demo accounts would (with tests/browser/walkthrough_user.py).

Everything this tier makes in libvirt is named by it: the datastore (so its pool is
`portal-bt<hex>`, never the demo's `portal-local`) and the VMs (`bt-<letters>`). Teardown removes
only those, and only as a fallback: the portal's own delete is asserted to have done it.
Screenshots and the servers' logs go to $PORTAL_ARTIFACTS_DIR/browser/ (artifacts/browser/).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser.chromium import chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PORTAL_ARTIFACTS_DIR") or ROOT / "artifacts") / "browser"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
URI = "qemu:///system"
NETWORK = "default"  # demo_setup's VLAN uses libvirt's default network


# ---- helpers around virsh and names ----

def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def pool_path(pool: str) -> str | None:
    """Return the target path of a libvirt pool, or None when there is no such pool."""
    result = virsh("pool-dumpxml", pool)
    if result.returncode != 0:
        return None
    return ET.fromstring(result.stdout).findtext("target/path")


def dhcp_hosts(network: str = NETWORK) -> dict[str, tuple[str, str]]:
    """Return the DHCP host entries of a libvirt network as {name: (mac, ip)}."""
    result = virsh("net-dumpxml", network)
    assert result.returncode == 0, result.stderr
    return {h.get("name", ""): (h.get("mac", ""), h.get("ip", ""))
            for h in ET.fromstring(result.stdout).iter("host")}


def vm_name() -> str:
    return "bt-" + "".join(random.choices(string.ascii_lowercase, k=6))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_vnc_ports(size: int = 20) -> str:
    """Return a block of VNC ports no one listens on, away from the 5900 everyone starts at.

    The portal's pool only knows its own VMs; a port taken by a domain of another portal (the
    demo) on the same host makes qemu fail with "Failed to reserve port".
    """
    starts = list(range(6300, 6900, size))
    random.shuffle(starts)
    for start in starts:
        if all(port_free(p) for p in range(start, start + size)):
            return f"{start}-{start + size - 1}"
    raise RuntimeError("no free block of VNC ports between 6300 and 6899")


def free_address_block(size: int) -> str:
    """Return the first of size addresses of the default network that nobody uses or leases.

    dnsmasq keeps a deleted VM's lease for an hour and will not give its address to another
    MAC meanwhile, so a block of an earlier run's guests would send this run's guests to the
    dynamic range, away from the address the portal shows.
    """
    leases = virsh("net-dhcp-leases", NETWORK).stdout
    taken = set(re.findall(r"\b192\.168\.122\.(\d+)/", leases))
    taken |= {ip.rsplit(".", 1)[1] for _mac, ip in dhcp_hosts().values()}
    starts = list(range(150, 250 - size))  # the demo's own pool starts at .100
    random.shuffle(starts)
    for start in starts:
        if not {str(n) for n in range(start, start + size)} & taken:
            return f"192.168.122.{start}"
    raise RuntimeError("no free block of addresses in libvirt's default network")


# ---- the portal in subprocesses ----

@dataclass
class Portal:
    """A running portal: where it answers, where it keeps its files, who may log in."""

    url: str
    var_dir: Path
    datastore: Path
    pool: str
    passwords: dict[str, str]
    domains: set[str] = field(default_factory=set)  # every VM name this tier asked for

    def new_vm_name(self) -> str:
        name = vm_name()
        while virsh("dominfo", name).returncode == 0 or name in self.domains:
            name = vm_name()
        self.domains.add(name)
        return name


def _read_accounts(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    assert lines and lines[0].split()[:2] == ["username", "role"], lines[:1]
    passwords = {}
    for line in lines[1:]:
        username, _role, password = line.split()
        passwords[username] = password
    assert set(passwords) == {"student", "faculty", "orgadmin", "admin"}, passwords.keys()
    return passwords


def _stop(proc: subprocess.Popen) -> None:
    """Stop the process group the portal process leads: TERM, then KILL after a while."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # qcluster's workers may outlive their leader for a moment; none may outlive the tier.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_until_up(url: str, procs: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"{log.name}: the process exited with {proc.returncode}:\n"
                            + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url + "/accounts/login/", timeout=5) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"the portal did not answer at {url} within 60 s:\n" + logs[0].read_text()[-3000:])


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    """Start a fresh portal the way `make demo` does, on its own directory and port."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    var_dir = Path(tempfile.mkdtemp(prefix="portal-bt-", dir="/var/tmp"))
    var_dir.chmod(0o755)  # qemu runs as libvirt-qemu and must reach the datastore below
    ds_name = "bt" + secrets.token_hex(4)
    pool = f"portal-{ds_name}"
    assert pool_path(pool) is None, f"libvirt already has a pool {pool}"
    port = free_port()
    console_port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "PORTAL_DEMO_HOST_URI", "DJANGO_DEBUG"}}
    env.update({
        "PORTAL_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "PORTAL_BASE_URL": url,
        "PYTHONUNBUFFERED": "1",
        "PORTAL_VNC_PORTS": free_vnc_ports(),
        "PORTAL_CONSOLE_LISTEN": f"127.0.0.1:{console_port}",
        "PORTAL_CONSOLE_URL": f"ws://127.0.0.1:{console_port}",
        # The image the tests' own fixture builds: no second build of the demo guest.
        "PORTAL_GUEST_CACHE": os.environ.get("PORTAL_GUEST_CACHE", "/var/tmp/portal-guest"),
    })
    # The demo's pool hands out 192.168.122.100 onwards; stay clear of its MACs and IPs.
    first_ip = free_address_block(10)
    setup_log = ARTIFACTS / "setup.log"
    procs: list[subprocess.Popen] = []
    logs = [ARTIFACTS / "web.log", ARTIFACTS / "worker.log", ARTIFACTS / "console.log"]
    portal = Portal(url=url, var_dir=var_dir, datastore=var_dir / "datastore", pool=pool,
                    passwords={})
    try:
        with setup_log.open("w") as out:
            for argv in (["migrate", "--noinput"], ["schedules_ensure"],
                         ["collectstatic", "--noinput"],
                         ["demo_setup", "--uri", URI, "--datastore-name", ds_name,
                          "--first-ip", first_ip, "--count", "10"]):
                out.write(f"--- manage.py {' '.join(argv)}\n")
                out.flush()
                done = subprocess.run([PYTHON, "manage.py", *argv], cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, timeout=300,
                                      check=False)
                if done.returncode != 0:
                    pytest.fail(f"manage.py {argv[0]} failed:\n" + setup_log.read_text()[-3000:])
        portal.passwords = _read_accounts(var_dir / "demo-accounts.txt")
        assert pool_path(pool) == str(portal.datastore)
        for argv, log in zip(
            (["runserver", f"127.0.0.1:{port}", "--noreload"], ["qcluster"], ["console_proxy"]),
            logs, strict=True,
        ):
            handle = log.open("w")
            procs.append(subprocess.Popen(
                [PYTHON, "manage.py", *argv], cwd=ROOT, env=env, stdout=handle,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            ))
            handle.close()
        _wait_until_up(url, procs, logs)
        yield portal
    finally:
        for proc in procs:
            _stop(proc)
        leftovers = _remove_what_we_made(portal)
        shutil.rmtree(var_dir, ignore_errors=True)
    assert not leftovers, f"the portal left these behind in libvirt (removed now): {leftovers}"


def _remove_what_we_made(portal: Portal) -> list[str]:
    """Remove domains and DHCP entries this tier named and its own pool; return what was left."""
    leftovers = []
    for name in sorted(portal.domains):
        if virsh("dominfo", name).returncode != 0:
            continue
        leftovers.append(name)
        virsh("destroy", name)
        virsh("undefine", name, "--nvram")
    for name, (mac, ip) in dhcp_hosts().items():
        if name in portal.domains:
            leftovers.append(f"DHCP host {name}")
            entry = ET.tostring(ET.Element("host", mac=mac, name=name, ip=ip),
                                encoding="unicode")
            virsh("net-update", NETWORK, "delete", "ip-dhcp-host", entry, "--live", "--config")
    # Only the pool of our own datastore, and only while it still points at our directory.
    if pool_path(portal.pool) == str(portal.datastore):
        virsh("pool-destroy", portal.pool)
        virsh("pool-undefine", portal.pool)
    return leftovers


# ---- the browser ----

@pytest.fixture(scope="session")
def browser(portal: Portal) -> Iterator[object]:
    with chromium() as launched:
        yield launched

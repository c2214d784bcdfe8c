"""Browser tier: the real portal, as `make demo` runs it, driven through Chromium.

A session fixture starts the portal in subprocesses on a fresh directory under /var/tmp (qemu
runs as another user and must reach the images): `migrate`, `schedules_ensure`,
`collectstatic`, `demo_setup`, then `runserver` and one `qcluster` on the ORM broker and a file
SQLite database. Playwright then walks the approval chain and a VM's whole life as the four
demo accounts would.

Everything this tier makes in libvirt is named by it: the datastore (so its pool is
`portal-bt<hex>`, never the demo's `portal-local`) and the VMs (`bt-<letters>`). Teardown removes
only those, and only as a fallback: the portal's own delete is asserted to have done it.
Screenshots and the servers' logs go to $PORTAL_ARTIFACTS_DIR/browser/ (artifacts/browser/).
"""

from __future__ import annotations

import contextlib
import itertools
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

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PORTAL_ARTIFACTS_DIR") or ROOT / "artifacts") / "browser"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
URI = "qemu:///system"
NETWORK = "default"  # demo_setup's VLAN uses libvirt's default network
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TEMPLATE = "Tiny demo guest"
INSTALL_TIMEOUT_MS = 120_000  # qemu may run under TCG
OPERATION_TIMEOUT_MS = 60_000

_shot_numbers = itertools.count(1)


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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class User:
    """One person at their own browser: log in and out, visit, screenshot, collect errors."""

    def __init__(self, browser: object, portal: Portal, username: str) -> None:
        self.portal = portal
        self.username = username
        self.role = username
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)
        self.page.on("dialog", lambda dialog: dialog.accept())

    def _console(self, msg: object) -> None:
        if msg.type == "error":
            self.errors.append(f"console error on {self.page.url}: {msg.text}")

    def _request_failed(self, request: object) -> None:
        # A poll cut short by a navigation is aborted; a static file must never fail.
        if "/static/" in request.url or request.failure != "net::ERR_ABORTED":
            self.errors.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: object) -> None:
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status} for {response.url}")

    def goto(self, path: str) -> None:
        self.page.goto(self.portal.url + path)

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{next(_shot_numbers):02d}-{self.role}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def nav(self, label: str) -> None:
        """Follow a link of the top navigation bar."""
        self.page.locator("#nav").get_by_role("link", name=label, exact=False).first.click()
        self.page.wait_for_load_state()

    def login(self) -> None:
        from playwright.sync_api import expect

        self.goto("/accounts/login/")
        self.shot("login")
        self.page.fill("#id_username", self.username)
        self.page.fill("#id_password", self.portal.passwords[self.username])
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("nav .dropdown-toggle")).to_contain_text(self.username)
        self.shot("dashboard")

    def logout(self) -> None:
        from playwright.sync_api import expect

        self.page.locator("nav .dropdown-toggle").click()
        self.page.get_by_role("button", name="Log out").click()
        expect(self.page.locator("#id_username")).to_be_visible()
        self.assert_clean()
        self.context.close()

    def assert_clean(self) -> None:
        assert not self.errors, "\n".join(self.errors)


def request_vm(user: User, name: str, purpose: str) -> None:
    """Fill in and submit "Request a VM" as the student, naming the faculty."""
    page = user.page
    page.fill("#id_name", name)
    page.select_option("#id_template", label=TEMPLATE)
    page.fill("#id_vcpus", "1")
    page.fill("#id_memory_mib", "128")
    page.fill("#id_disk_gib", "1")
    page.fill("#id_purpose", purpose)
    faculty = page.locator("#id_faculty option", has_text="(faculty)").first.get_attribute("value")
    page.select_option("#id_faculty", value=faculty)
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()


def expect_submitted(user: User, text: str) -> None:
    """Assert the request went in; if the form came back, say what it complained about."""
    from playwright.sync_api import expect

    errors = user.page.locator("#form-errors")
    if errors.count():
        pytest.fail(f"the request form refused the request: {errors.inner_text()}")
    expect(user.page.locator("main .alert-success")).to_contain_text(text)


def decide(user: User, name: str, decision: str, reason: str) -> None:
    """Approve or reject the named request from the "Pending approvals" page."""
    from playwright.sync_api import expect

    user.nav("Pending approvals")
    form = user.page.locator(f'form.approval-form[data-request="{name}"]')
    expect(form).to_be_visible()
    user.shot("approvals")
    form.locator("textarea[name=reason]").fill(reason)
    form.get_by_role("button", name=decision).click()
    user.page.wait_for_load_state()
    expect(user.page.locator("main .alert-success")).to_contain_text(name)
    expect(user.page.locator(f'form.approval-form[data-request="{name}"]')).to_have_count(0)
    user.shot(f"approvals-after-{decision.lower()}")


# ---- the tests ----

def test_bad_name_is_refused_and_faculty_rejection_reaches_the_student(browser, portal) -> None:
    from playwright.sync_api import expect

    name = portal.new_vm_name()
    student = User(browser, portal, "student")
    student.login()
    student.nav("Request a VM")
    student.shot("request-form")
    request_vm(student, "Bad_Name", "A name libvirt must never see.")
    name_field = student.page.locator("#id_name")
    expect(name_field).to_have_class(re.compile(r"\bis-invalid\b"))
    expect(student.page.locator("#error_1_id_name, .invalid-feedback").first).to_contain_text(
        "lower-case letters")
    expect(student.page.locator("#form-errors")).to_contain_text("Name:")
    student.shot("request-bad-name")
    student.nav("My requests")
    expect(student.page.locator("main table")).not_to_contain_text("Bad_Name")

    student.nav("Request a VM")
    request_vm(student, name, "Coursework that the faculty turns down.")
    expect_submitted(student, f"Request {name} submitted")
    student.logout()

    faculty = User(browser, portal, "faculty")
    faculty.login()
    reason = "Use the shared lab machines for this course."
    decide(faculty, name, "Reject", reason)
    faculty.logout()

    student = User(browser, portal, "student")
    student.login()
    student.nav("My requests")
    row = student.page.locator("main table tbody tr", has_text=name)
    expect(row).to_contain_text("Rejected")
    student.shot("requests-rejected")
    row.get_by_role("link", name=name).click()
    history = student.page.locator(".timeline")
    expect(history.locator("li.rejected")).to_contain_text("Rejected")
    expect(history.locator("li.rejected")).to_contain_text(reason)
    student.shot("request-rejected")
    student.logout()
    assert virsh("dominfo", name).returncode != 0


def wait_for_operation(user: User, kind: str) -> None:
    """Wait, without reloading, for the newest operation of this kind to finish; it must succeed."""
    badge = user.page.locator(f'#vm-operations tr[data-kind="{kind}"]').first.locator(
        "[data-status]")
    deadline = time.monotonic() + (INSTALL_TIMEOUT_MS if kind == "install"
                                   else OPERATION_TIMEOUT_MS) / 1000
    status = None
    while time.monotonic() < deadline:
        if badge.count():
            status = badge.get_attribute("data-status")
            if status in {"succeeded", "failed"}:
                break
        user.page.wait_for_timeout(500)
    row = user.page.locator(f'#vm-operations tr[data-kind="{kind}"]').first
    detail = row.inner_text() if row.count() else "no row"
    assert status == "succeeded", f"{kind} ended {status}: {detail}"
    assert badge.inner_text().strip() == "Done"


def vm_action(user: User, name: str, action: str, state: str, label: str, libvirt: str) -> None:
    """Press an action button of the VM page and wait for the new state, also in libvirt."""
    from playwright.sync_api import expect

    page = user.page
    with page.expect_navigation():
        page.locator(f'#vm-actions button[data-action="{action}"]').click()
    expect(page.locator("main .alert-success")).to_contain_text(f"of {name} queued")
    wait_for_operation(user, action)
    expect(page.locator("#vm-state [data-state]")).to_have_attribute(
        "data-state", state, timeout=OPERATION_TIMEOUT_MS)
    expect(page.locator("#vm-state")).to_have_text(label)
    # The actions come back once nothing is under way.
    expect(page.locator("#vm-actions button[data-action]").first).to_be_visible(
        timeout=OPERATION_TIMEOUT_MS)
    if libvirt:
        assert virsh("domstate", name).stdout.strip() == libvirt
    user.shot(f"vm-{label.lower().replace(' ', '-')}")


def test_request_approve_run_and_delete_a_vm(browser, portal) -> None:
    from playwright.sync_api import expect

    name = portal.new_vm_name()
    student = User(browser, portal, "student")
    student.login()
    student.nav("Request a VM")
    request_vm(student, name, "Operating systems lab: a tiny guest that boots.")
    expect_submitted(student, f"Request {name} submitted; it now awaits faculty.")
    student.shot("request-submitted")
    student.nav("My requests")
    expect(student.page.locator("main table tbody tr", has_text=name)).to_contain_text(
        "Awaiting faculty")
    student.shot("my-requests")
    student.logout()

    for username, next_stage in (("faculty", "it now awaits org-admin"),
                                 ("orgadmin", "it now awaits admin"),
                                 ("admin", "its install is queued")):
        approver = User(browser, portal, username)
        approver.login()
        decide(approver, name, "Approve", f"Fine by {username}.")
        expect(approver.page.locator("main .alert-success")).to_contain_text(next_stage)
        approver.logout()

    student = User(browser, portal, "student")
    student.login()
    student.nav("My VMs")
    row = student.page.locator("main table tbody tr", has_text=name)
    expect(row).to_be_visible()
    student.shot("my-vms")
    row.get_by_role("link", name=name).click()
    page = student.page
    expect(page.locator("#vm-live h1")).to_contain_text(name)
    student.shot("vm-opened")
    # No reload from here on: the page polls its live part every 3 s.
    wait_for_operation(student, "install")
    expect(page.locator("#vm-state [data-state]")).to_have_attribute("data-state", "running")
    expect(page.locator("#vm-state")).to_have_text("Running")
    expect(page.locator("#vm-ip")).to_have_text(re.compile(
        r"^192\.168\.122\.\d+$"))
    expect(page.locator("#vm-mac")).to_have_text(re.compile(
        r"^52:54:00(:[0-9a-f]{2}){3}$"))
    assert virsh("domstate", name).stdout.strip() == "running"
    ip, mac = page.locator("#vm-ip").inner_text(), page.locator("#vm-mac").inner_text()
    assert dhcp_hosts().get(name) == (mac, ip), f"no DHCP entry {mac} -> {ip} for {name}"
    volumes = sorted(p.name for p in portal.datastore.glob("vm-*.qcow2"))
    assert len(volumes) == 1, volumes
    student.shot("vm-running")
    # On a phone the page must reflow, not scroll sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    student.shot("vm-running-phone")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the VM page is {overflow}px wider than a 390px phone screen"
    page.set_viewport_size({"width": 1366, "height": 900})

    vm_action(student, name, "suspend", "paused", "Suspended", "paused")
    vm_action(student, name, "resume", "running", "Running", "running")
    vm_action(student, name, "destroy", "shutoff", "Shut off", "shut off")
    vm_action(student, name, "start", "running", "Running", "running")
    with page.expect_navigation():
        page.locator('#vm-actions button[data-action="delete"]').click()
    wait_for_operation(student, "delete")
    expect(page.locator("#vm-state [data-state]")).to_have_attribute("data-state", "deleted")
    expect(page.locator("#vm-live [role=status]")).to_contain_text("This VM was deleted")
    student.shot("vm-deleted")
    assert virsh("dominfo", name).returncode != 0, f"domain {name} is still defined"
    assert not list(portal.datastore.glob("vm-*.qcow2")), "the VM's disk is still there"
    assert name not in dhcp_hosts(), f"the DHCP entry of {name} is still there"
    student.nav("My VMs")
    expect(page.locator("main table")).not_to_contain_text(name)
    student.shot("my-vms-after-delete")
    student.logout()

    admin = User(browser, portal, "admin")
    admin.login()
    admin.nav("Operations")
    table = admin.page.locator("main table")
    for kind in ("Install", "Suspend", "Resume", "Force off", "Start", "Delete"):
        expect(table.locator("tbody tr", has_text=name).filter(has_text=kind).first
               ).to_contain_text("Done")
    admin.shot("operations")
    # A short page shows the table's pagination as it looks on a long list.
    admin.goto("/operations/?per_page=3")
    expect(admin.page.locator("main .pagination .page-item")).not_to_have_count(0)
    admin.shot("operations-paginated")
    admin.nav("Hosts")
    host_row = admin.page.locator("main table tbody tr", has_text="local")
    expect(host_row).to_contain_text("qemu:///system")
    expect(host_row.locator(".badge").first).to_have_text("Up")
    admin.shot("hosts")
    host_row.get_by_role("link", name="local").click()
    expect(admin.page.locator("main h1")).to_contain_text("local")
    admin.shot("host-detail")
    admin.logout()


def new_ssh_key():  # noqa: ANN201
    """Return (paramiko private key, OpenSSH public line) of a fresh ed25519 key."""
    from io import StringIO

    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return paramiko.Ed25519Key.from_private_key(StringIO(pem)), f"{public} student@laptop"


def wait_for_text(page, locator, text: str, timeout_s: float, poke: bool = False) -> str:  # noqa: ANN001
    """Wait until the locator's text holds text, pressing Enter now and then if poke."""
    deadline = time.monotonic() + timeout_s
    seen = ""
    while time.monotonic() < deadline:
        seen = locator.inner_text()
        if text in seen:
            return seen
        if poke:
            page.keyboard.press("Enter")
        page.wait_for_timeout(1000)
    pytest.fail(f"{text!r} never appeared; the screen shows:\n{seen[-1500:]}")


def wait_lit(page, done, timeout_s: float) -> int:  # noqa: ANN001
    """Count the console canvas's lit pixels until done(count) holds; return the last count."""
    from tests.browser.test_console import COUNT_LIT

    deadline = time.monotonic() + timeout_s
    lit = page.evaluate(COUNT_LIT)
    while not done(lit) and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        lit = page.evaluate(COUNT_LIT)
    return lit


def test_a_student_gets_into_a_new_vm_by_console_serial_console_and_ssh(browser, portal) -> None:
    """Key in the profile -> request -> admin's approval -> Console, serial login, SSH."""
    from playwright.sync_api import expect

    from tests.browser.test_console import REUSE
    from tests.integration.guest import ssh_connect, ssh_run

    name = portal.new_vm_name()
    key, public_line = new_ssh_key()
    student = User(browser, portal, "student")
    student.login()
    page = student.page
    student.goto("/people/keys/")
    page.fill("#id_name", "laptop")
    page.fill("#id_public_key", public_line)
    page.locator("#ssh-key-form").get_by_role("button", name="Add key").click()
    expect(page.locator("#ssh-keys tbody")).to_contain_text("laptop")
    student.shot("ssh-keys")
    student.nav("Request a VM")
    expect(page.get_by_label("laptop", exact=False)).to_be_checked()  # the newest key
    page.get_by_label("Generate a password", exact=False).check()
    request_vm(student, name, "Networks lab: log in by console and SSH.")
    expect_submitted(student, f"Request {name} submitted")
    student.logout()

    admin = User(browser, portal, "admin")  # an admin's approval is the last word at any stage
    admin.login()
    decide(admin, name, "Approve", "Approved for the networks lab.")
    admin.logout()

    student = User(browser, portal, "student")
    student.login()
    page = student.page
    student.nav("My VMs")
    page.locator("main table tbody tr", has_text=name).get_by_role("link", name=name).click()
    wait_for_operation(student, "install")
    # The login panel follows the install by itself: no reload.
    expect(page.locator("#password-reveal")).to_be_visible(timeout=10_000)
    ip = page.locator("#vm-ip").inner_text()
    login_user = page.locator("#vm-login-user").inner_text().strip()
    expect(page.locator("#vm-ssh-line")).to_have_text(f"ssh {login_user}@{ip}")
    expect(page.locator("#vm-login-keys")).to_contain_text("laptop")
    page.locator("#password-reveal").get_by_role("button").click()
    password = page.locator("#vm-password").inner_text().strip()
    assert len(password) >= 16, password
    student.shot("vm-password-once")
    page.reload()
    expect(page.locator("#vm-password")).to_have_count(0)  # shown once, then only the hash
    expect(page.locator("#vm-login-password")).to_contain_text("already shown")

    vm_page = page.url
    page.locator("#vm-console a", has_text="Serial console").first.click()
    expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
    page.locator("#console-screen .xterm").click()
    rows = page.locator("#console-screen .xterm-rows")
    wait_for_text(page, rows, "login:", INSTALL_TIMEOUT_MS / 1000, poke=True)
    page.keyboard.type(login_user)
    page.keyboard.press("Enter")
    wait_for_text(page, rows, "assword:", 30)
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.keyboard.type("echo logged-in-as-$(id -un)")
    page.keyboard.press("Enter")
    wait_for_text(page, rows, f"logged-in-as-{login_user}", 30)
    student.shot("serial-logged-in")

    # The graphical console: by now tty1 shows the login prompt below the boot messages.
    page.goto(vm_page)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.locator("#vm-console a", has_text="Console").first.click()
    expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
    lit = wait_lit(page, lambda n: n >= 3000, 30)
    assert lit >= 3000, f"the console's canvas stayed (nearly) blank: {lit} lit pixels"
    student.shot("console")
    # Log in there too and clear the screen: only the shell's prompt is left lit.
    page.locator("#console-screen canvas").click()
    for text, pause in ((login_user, 2000), (password, 3000), ("clear", 1000)):
        page.keyboard.type(text, delay=30)
        page.keyboard.press("Enter")
        page.wait_for_timeout(pause)
    cleared = wait_lit(page, lambda n: 0 < n < 1500, 30)
    assert 0 < cleared < 1500, f"no shell cleared the screen: {cleared} lit pixels (was {lit})"
    student.shot("console-logged-in")
    assert len(sockets) == 1 and "token=" in sockets[0], sockets
    again = page.evaluate(REUSE, sockets[0])
    assert again["code"] != 1000 and "used already" in again["reason"], again

    client = ssh_connect(ip, login_user, key=key)  # from this host, on the VM's network
    try:
        assert ssh_run(client, "hostname").strip() == name
    finally:
        client.close()

    page.goto(f"{portal.url}/vms/")
    page.locator("main table tbody tr", has_text=name).get_by_role("link", name=name).click()
    with page.expect_navigation():
        page.locator('#vm-actions button[data-action="delete"]').click()
    wait_for_operation(student, "delete")
    assert virsh("dominfo", name).returncode != 0
    assert not list(portal.datastore.glob("vm-*")), "the VM's disk or seed is still there"
    student.logout()

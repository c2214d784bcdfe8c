"""Browser tier: the graphical and serial consoles in Chromium, through the real proxy.

The portal runs as pytest-django's live server; the console proxy runs in a thread of the same
process against the same database. The VM is the demo guest, defined on qemu:///system under
TCG by the test itself, so the screen and the serial line show what the guest prints.
Screenshots at 1280 and 375 px go to $PORTAL_ARTIFACTS_DIR/browser/ (artifacts/browser/).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from console.models import ConsoleToken
from console.proxy import CLOSE_REFUSED, ConsoleProxy, Limits
from hosts.models import Host
from hosts.virt import Hypervisor, close_all
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from tests.browser.chromium import chromium
from tests.integration.guest import guest_image  # noqa: F401 - the session fixture
from tests.integration.qemu import unique, virsh
from vms.models import VirtualMachine, VMState

pytestmark = [pytest.mark.browser, pytest.mark.hypervisor]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PORTAL_ARTIFACTS_DIR") or ROOT / "artifacts") / "browser"
URI = "qemu:///system"
BOOT_TIMEOUT_MS = 120_000
PASSWORD = "pass-word-123"  # tests.factories.UserFactory's

COUNT_LIT = """() => {
  const canvas = document.querySelector('#console-screen canvas');
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] + data[i + 1] + data[i + 2] > 60) lit++;
  }
  return lit;
}"""

REUSE = """(url) => new Promise((resolve) => {
  const socket = new WebSocket(url, ['binary']);
  socket.addEventListener('close', (e) => resolve({code: e.code, reason: e.reason}));
})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyThread:
    """The console proxy on its own event loop in a thread of the test process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            async with ConsoleProxy(Limits(idle=300, longest=3600)).serve(
                    "127.0.0.1", self.port):
                self.ready.set()
                await self.stop.wait()

        self.loop.run_until_complete(main())

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        assert self.ready.wait(10), "the console proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def console_vm(site, guest_image: Path) -> Iterator[VirtualMachine]:  # noqa: F811
    """A running demo guest owned by the student, on qemu:///system under TCG."""
    close_all()
    workdir = Path(tempfile.mkdtemp(prefix="portaltest-", dir="/var/tmp"))
    workdir.chmod(0o755)  # qemu runs as another user and must reach the images
    disk = workdir / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest_image), "-F",
                    "qcow2", str(disk)], check=True, timeout=60)
    disk.chmod(0o666)
    Host.objects.filter(pk=site.host.pk).update(uri=URI, accel="qemu", cpu_mode="")
    site.host.refresh_from_db()
    name = unique("bc")
    vm = VirtualMachine.objects.create(
        name=name, owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=256, disk_gib=1, state=VMState.RUNNING,
        vnc_port=None)
    hv = Hypervisor(URI)
    ports = set(range(6300, 6900)) - hv.vnc_ports_in_use()
    vm.vnc_port = min(p for p in ports if _port_free(p))
    vm.save(update_fields=["vnc_port"])
    spec = DomainSpec(name=name, uuid=str(vm.uuid), domain_type="qemu", vcpus=1,
                      memory_mib=256, disk_path=str(disk), vnc_port=vm.vnc_port,
                      vnc_password=vm.vnc_password)
    hv.define_domain(build_domain_xml(spec))
    try:
        hv.start(name)
        yield vm
    finally:
        virsh("destroy", name, check=False)
        virsh("undefine", name, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        close_all()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(browser, live_server, user, width: int, height: int, **options):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.goto(live_server.url + reverse("login"))
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("nav .dropdown-toggle")).to_contain_text(user.username)
    return context, page, errors


def wait_lit(page, minimum: int, timeout_ms: int) -> int:
    deadline = time.monotonic() + timeout_ms / 1000
    lit = 0
    while time.monotonic() < deadline:
        lit = page.evaluate(COUNT_LIT)
        if lit >= minimum:
            return lit
        page.wait_for_timeout(100)
    return lit


def test_console_and_serial_console_in_the_browser(browser, live_server, site, console_vm,
                                                   settings):
    from playwright.sync_api import expect

    vm = console_vm
    with ProxyThread() as proxy:
        settings.PORTAL_CONSOLE_URL = f"ws://localhost:{proxy.port}"
        settings.PORTAL_CONSOLE_ALLOWED_ORIGINS = [live_server.url]
        context, page, errors = login(browser, live_server, site.student, 1280, 800)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(live_server.url + reverse("vms:vm_detail", args=[vm.pk]))
        page.locator("#vm-console a", has_text="Console").first.click()
        expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
        # The guest boots under TCG; its screen fills with the kernel's text and the prompt.
        # (How soon the first frame arrives is measured by bench/usable_vm.py.)
        lit = wait_lit(page, 3000, BOOT_TIMEOUT_MS)
        assert lit >= 3000, f"the guest's screen never filled: {lit} lit pixels"
        canvas = page.locator("#console-screen canvas").bounding_box()
        assert canvas["width"] <= 1280 and canvas["height"] > 200
        assert page.locator("#console-cad").is_enabled()

        assert len(sockets) == 1 and "token=" in sockets[0]
        again = page.evaluate(REUSE, sockets[0])
        assert again["code"] == CLOSE_REFUSED, again
        assert "used already" in again["reason"]

        page.goto(live_server.url + reverse("console:serial", args=[vm.pk]))
        expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
        page.locator("#console-screen .xterm").click()
        rows = page.locator("#console-screen .xterm-rows")
        deadline = time.monotonic() + BOOT_TIMEOUT_MS / 1000
        while "login:" not in rows.inner_text() and time.monotonic() < deadline:
            page.keyboard.press("Enter")
            page.wait_for_timeout(1500)
        expect(rows).to_contain_text("login:")
        shot(page, "serial-1280")
        # By now the guest's first console (tty1) shows its prompt too.
        page.goto(live_server.url + reverse("console:vnc", args=[vm.pk]))
        expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
        assert wait_lit(page, 3000, 30_000) >= 3000
        page.wait_for_timeout(500)
        shot(page, "vnc-1280")
        assert not errors, errors
        context.close()

        context, page, errors = login(browser, live_server, site.student, 375, 740)
        page.goto(live_server.url + reverse("console:vnc", args=[vm.pk]))
        expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
        assert wait_lit(page, 3000, 30_000) >= 3000
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, "vnc-375")
        page.goto(live_server.url + reverse("console:serial", args=[vm.pk]))
        expect(page.locator("#console-status")).to_have_attribute("data-state", "connected")
        page.locator("#console-screen .xterm").click()
        page.keyboard.press("Enter")
        expect(page.locator("#console-screen .xterm-rows")).to_contain_text("login:")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        shot(page, "serial-375")
        assert not errors, errors
        context.close()
    assert ConsoleToken.objects.filter(vm=vm).count() == 5
    assert not ConsoleToken.objects.filter(vm=vm, open_connections__gt=0).exists()


def test_without_javascript_the_page_says_so_and_shows_ssh(browser, live_server, site,
                                                            console_vm):
    from playwright.sync_api import expect

    context, page, _errors = login(browser, live_server, site.student, 1280, 800,
                                   java_script_enabled=False)
    page.goto(live_server.url + reverse("console:vnc", args=[console_vm.pk]))
    expect(page.locator("#console-nojs")).to_contain_text("The console needs JavaScript")
    expect(page.locator("#console-nojs")).to_contain_text("SSH")
    for hidden in ("#console-screen", "#console-status", "#console-cad"):
        expect(page.locator(hidden)).to_be_hidden()
    shot(page, "nojs-1280")
    assert not ConsoleToken.objects.exists()
    context.close()

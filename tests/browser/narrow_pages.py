"""Browser tier helpers for tests/browser/test_pages_narrow.py: every page a role may open,
and one browser context per role at a phone's width, with or without JavaScript.

The pages come from the permission matrix (tests/portal/test_permission_matrix.py): every GET
URL a role answers 200 to, kept when it is a whole HTML page (fragments, images and JSON are
not pages). The portal is pytest-django's live server on the fast tier's site; a role signs in
with a session cookie, not the login form. Screenshots go to
$PORTAL_ARTIFACTS_DIR/browser/pages/<role>-<page>-<width>.png.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

from tests.browser.walkthrough_portal import ARTIFACTS
from tests.portal.test_permission_matrix import MATRIX, url_for

PAGES_DIR = ARTIFACTS / "pages"
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}

# Form controls of the page's main part that a person can press but cannot see.
HIDDEN_BUTTONS = """() => [...document.querySelectorAll(
    'main form button, main form input[type=submit]')]
  .filter((b) => !b.checkVisibility({visibilityProperty: true, opacityProperty: true}))
  .map((b) => (b.textContent.trim() || b.value || b.getAttribute('aria-label') || b.outerHTML))"""

# Buttons of the page's main part whose label wraps onto a second line.
WRAPPED_BUTTONS = """() => [...document.querySelectorAll('main .btn')]
  .filter((b) => b.checkVisibility())
  .filter((b) => {
    const s = getComputedStyle(b);
    const text = b.clientHeight - parseFloat(s.paddingTop) - parseFloat(s.paddingBottom);
    return text > 1.5 * parseFloat(s.lineHeight);
  })
  .map((b) => b.textContent.trim() || b.getAttribute('aria-label') || b.outerHTML)"""

# The top of each entry of the navigation bar: one line when they all share a row.
NAV_ROWS = """() => [...document.querySelectorAll('nav.navbar .navbar-nav > .nav-item')]
  .filter((i) => i.checkVisibility())
  .map((i) => { const r = i.getBoundingClientRect(); return Math.round(r.top + r.height / 2); })"""


def add_long_names(site: object, objects: dict) -> None:
    """Give the site names and addresses as long as real ones (the matrix's are short)."""
    from django.utils import timezone

    from hosts.models import Host
    from networking.models import PrivateIP
    from operations.models import Operation, OperationKind, OperationStatus
    from vms.models import VirtualMachine, VMState

    Host.objects.filter(pk=site.host.pk).update(
        uri="qemu+ssh://portal@hypervisor-01.datacentre.example.org/system")
    vm = VirtualMachine.objects.create(
        name="distributed-systems-coursework-group-seven-experiment-run-0042", owner=site.student,
        organisation=site.org, template=site.template, host=site.host, vcpus=4,
        memory_mib=4096, disk_gib=20, state=VMState.RUNNING, vnc_port=5907)
    free = PrivateIP.objects.filter(vlan=site.vlan, vm=None).order_by("id")
    for machine, address in zip((objects["vm"], vm), free[:2], strict=True):
        address.vm, address.allocated_at = machine, timezone.now()
        address.save()
    Operation.objects.create(
        kind=OperationKind.START, vm=vm, status=OperationStatus.FAILED,
        message="The host hypervisor-01.datacentre.example.org refused the domain: "
                "internal error: process exited while connecting to monitor")


def html_pages(site: object, objects: dict, role: str) -> dict[str, str]:
    """Return {URL name: path} of every whole HTML page the matrix lets the role open."""
    client = site.client(None if role == "anon" else site.users[role])
    pages = {}
    for name, (method, kind, expected) in sorted(MATRIX.items()):
        if method != "get" or expected[role] != 200:
            continue
        path = url_for(name, kind, objects)
        response = client.get(path)
        assert response.status_code == 200, (name, role, response.status_code)
        if not response["Content-Type"].startswith("text/html"):
            continue
        if response.content.lstrip()[:15].lower() == b"<!doctype html>":
            pages[name] = path
    return pages


class Visit:
    """One role's browser context: sign in, open pages, measure them, take screenshots."""

    def __init__(self, browser: object, base: str, role: str, user: object | None, *,
                 javascript: bool = True) -> None:
        self.base = base
        self.role = role
        self.context = browser.new_context(viewport=PHONE, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"{self.page.url}: {exc}"))
        self.page.on("dialog", lambda dialog: dialog.dismiss())
        if user is not None:
            self._sign_in(user)

    def _sign_in(self, user: object) -> None:
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        self.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value,
                                   "domain": urlsplit(self.base).hostname, "path": "/"}])

    def goto(self, path: str) -> object:
        """Open a page and wait until what htmx loads at once has arrived."""
        response = self.page.goto(self.base + path)
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        # A page that polls may never fall idle; it has loaded all the same.
        with contextlib.suppress(PlaywrightTimeout):
            self.page.wait_for_load_state("networkidle", timeout=5_000)
        return response

    def width(self, size: dict) -> None:
        self.page.set_viewport_size(size)

    def widths(self) -> tuple[int, int]:
        """Return the document's scroll width and the window's width without its scrollbar."""
        scroll, window = self.page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        return scroll, window

    def hidden_buttons(self) -> list[str]:
        return self.page.evaluate(HIDDEN_BUTTONS)

    def wrapped_buttons(self) -> list[str]:
        return self.page.evaluate(WRAPPED_BUTTONS)

    def nav_rows(self) -> list[int]:
        return self.page.evaluate(NAV_ROWS)

    def shot(self, name: str, size: dict) -> Path:
        PAGES_DIR.mkdir(parents=True, exist_ok=True)
        path = PAGES_DIR / f"{self.role}-{name.replace(':', '-')}-{size['width']}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()

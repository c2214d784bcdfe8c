"""Browser tier: the login throttle as a person meets it, and the pages under the CSP.

The portal runs as pytest-django's live server on libvirt's test driver (the fast tier's site);
no guest is needed: what is checked is what Chromium itself reports. Every page is loaded at
1280 px with the portal's Content-Security-Policy in force, and any "Content Security Policy"
message on the browser console (a refused inline script, style or connection) fails the test.
Screenshots go to $PORTAL_ARTIFACTS_DIR/browser/ (artifacts/browser/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from tests.browser.chromium import chromium
from tests.browser.test_console import ProxyThread, free_port
from vms.models import VirtualMachine, VMState
from vms.services.workflow import vm_request_create

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("PORTAL_ARTIFACTS_DIR") or ROOT / "artifacts") / "browser"
PASSWORD = "pass-word-123"  # tests.factories.UserFactory's
WIDTH, HEIGHT = 1280, 800


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


class Visitor:
    """One browser context that records every CSP message and page error it sees."""

    def __init__(self, browser: object, live_server: object) -> None:
        self.base = live_server.url
        self.context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.csp: list[str] = []
        self.errors: list[str] = []
        self.sockets: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))
        self.page.on("dialog", lambda dialog: dialog.dismiss())

    def _console(self, msg: object) -> None:
        if "Content Security Policy" in msg.text:
            self.csp.append(f"{self.page.url}: {msg.text}")

    def goto(self, path: str) -> object:
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("networkidle")
        return response

    def login(self, username: str, password: str = PASSWORD) -> object:
        self.goto(reverse("login"))
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        with self.page.expect_navigation():
            self.page.get_by_role("button", name="Log in").click()
        return self.page

    def sign_in(self, user: object) -> None:
        """Start a session for the user without the login form, as an admin elsewhere would."""
        from urllib.parse import urlsplit

        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        self.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value,
                                   "domain": urlsplit(self.base).hostname, "path": "/"}])

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"hardening-{name}.png"), full_page=True)


def test_too_many_failed_logins_show_the_throttle_message(browser, live_server, site):
    from playwright.sync_api import expect

    visitor = Visitor(browser, live_server)
    for _ in range(5):
        visitor.login("stu", "not-the-password")
        expect(visitor.page.locator("main .alert-danger")).to_be_visible()
    # The right password now is refused too, with the login page saying why.
    visitor.login("stu")
    message = visitor.page.locator("#login-locked-out")
    expect(message).to_contain_text("Too many failed logins for this account or address")
    expect(message).to_contain_text("try again in 15 minutes or ask an administrator to "
                                    "unlock it")
    expect(visitor.page.locator("#id_username")).to_have_value("stu")
    expect(visitor.page.locator("nav .dropdown-toggle")).to_have_count(0)
    visitor.shot("login-locked-out-1280")

    # This machine's address is locked as well: even the admin's right password is refused.
    admin = Visitor(browser, live_server)
    admin.login("adm")
    expect(admin.page.locator("#login-locked-out")).to_be_visible()
    # An admin signed in elsewhere unlocks the account from the person's page; the student
    # then gets in (the lock on the address goes with the account's failures).
    admin.sign_in(site.admin)
    admin.goto(reverse("accounts:person_detail", args=[site.student.pk]))
    expect(admin.page.locator("#login-failures")).to_contain_text("locked out")
    admin.shot("person-locked-out-1280")
    with admin.page.expect_navigation():
        admin.page.locator("#unlock-logins").click()
    expect(admin.page.locator("main .alert-success")).to_contain_text("unlocked")
    visitor.login("stu")
    expect(visitor.page.locator("nav .dropdown-toggle")).to_contain_text("stu")
    assert not visitor.csp and not admin.csp, visitor.csp + admin.csp
    visitor.context.close()
    admin.context.close()


def test_the_main_pages_load_under_the_csp_without_a_violation(browser, live_server, site,
                                                               settings):
    from playwright.sync_api import expect

    vm = VirtualMachine.objects.create(
        name="csp-lab", owner=site.admin, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING,
        vnc_port=5999)
    vm_request_create(requester=site.student, name="csp-wait", template=site.template, vcpus=1,
                      memory_mib=512, disk_gib=2, purpose="CSP check",
                      security_domain=site.domain, faculty=site.faculty)
    admin = Visitor(browser, live_server)
    admin.login("adm")
    pages = {
        "dashboard": reverse("dashboard"),
        "vm": reverse("vms:vm_detail", args=[vm.pk]),
        "approvals": reverse("vms:approvals"),
        "host": reverse("hosts:host_detail", args=[site.host.pk]),
        "operations": reverse("vms:operation_list"),
        "network": reverse("networking:overview"),
        "people": reverse("accounts:person_detail", args=[site.student.pk]),
        "admin": reverse("admin:index"),
        "admin-vm": reverse("admin:vms_virtualmachine_change", args=[vm.pk]),
        "admin-host": reverse("admin:hosts_host_change", args=[site.host.pk]),
    }
    for name, path in pages.items():
        response = admin.goto(path)
        assert response.status == 200, (name, response.status)
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        assert "no-store" in response.headers["cache-control"], name
        admin.shot(f"csp-{name}-1280")
    # The VM page's usage part comes with the page (no script fetches it first); this VM has
    # no figures yet, and the part says when they will come.
    admin.goto(pages["vm"])
    expect(admin.page.locator("#usage #usage-empty")).to_contain_text("Figures appear")
    # The approvals page asks before nothing; the operations filter submits by itself.
    admin.goto(pages["operations"])
    with admin.page.expect_navigation():
        admin.page.select_option("select[name=status]", "failed")
    assert "status=failed" in admin.page.url

    # The consoles: noVNC and xterm.js, each opening its websocket to the proxy's origin.
    with ProxyThread() as proxy:
        settings.PORTAL_CONSOLE_URL = f"ws://localhost:{proxy.port}"
        settings.PORTAL_CONSOLE_ALLOWED_ORIGINS = [live_server.url]
        for kind in ("vnc", "serial"):
            admin.sockets.clear()
            admin.goto(reverse(f"console:{kind}", args=[vm.pk]))
            expect(admin.page.locator("#console-status")).not_to_have_attribute(
                "data-state", "connecting")
            assert admin.sockets and admin.sockets[0].startswith(
                f"ws://localhost:{proxy.port}/{kind}?token="), admin.sockets
            if kind == "serial":
                # xterm.js measured its cells: its nonce'd <style> elements were applied.
                rows = admin.page.locator("#console-screen .xterm-rows")
                expect(rows).to_be_attached()
                assert admin.page.evaluate(
                    "[...document.querySelectorAll('style')].filter(s => s.nonce).length") > 0
            admin.shot(f"csp-console-{kind}-1280")
    assert not admin.csp, "\n".join(admin.csp)
    # The watch is real: a connection the policy does not name is refused and reported.
    admin.goto(reverse("dashboard"))
    admin.page.evaluate(f"() => {{ try {{ new WebSocket('ws://127.0.0.2:{free_port()}/'); }} "
                        "catch (e) {} }")
    admin.page.wait_for_timeout(500)
    assert any("connect-src" in m for m in admin.csp), admin.csp
    admin.csp.clear()
    assert not admin.csp, "\n".join(admin.csp)
    assert not admin.errors, admin.errors
    admin.context.close()


def test_the_student_pages_load_under_the_csp_without_a_violation(browser, live_server, site):
    student = Visitor(browser, live_server)
    student.login("stu")
    for name, path in {"dashboard": reverse("dashboard"),
                       "request-form": reverse("vms:request_create"),
                       "requests": reverse("vms:request_list"),
                       "keys": reverse("accounts:ssh_key_list")}.items():
        response = student.goto(path)
        assert response.status == 200, name
    assert not student.csp, "\n".join(student.csp)
    assert not student.errors, student.errors
    student.context.close()

"""Browser tier walkthroughs: one person at their own browser, and the steps every walkthrough
takes (request a VM, decide on it, wait for its operations).

The portal and the browser are tests/browser/walkthrough_portal.py's.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from tests.browser.walkthrough_portal import ARTIFACTS, Portal, virsh

TEMPLATE = "Tiny demo guest"
INSTALL_TIMEOUT_MS = 120_000  # qemu may run under TCG
OPERATION_TIMEOUT_MS = 60_000

_shot_numbers = itertools.count(1)


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


# What each approver's approval leads to, in the chain's order.
CHAIN = (("faculty", "it now awaits org-admin"), ("orgadmin", "it now awaits admin"),
         ("admin", "its install is queued"))


def approve_through_the_chain(browser: object, portal: Portal, name: str) -> None:
    """Have faculty, org-admin and admin approve the named request, each seeing what follows."""
    from playwright.sync_api import expect

    for username, next_stage in CHAIN:
        approver = User(browser, portal, username)
        approver.login()
        decide(approver, name, "Approve", f"Fine by {username}.")
        expect(approver.page.locator("main .alert-success")).to_contain_text(next_stage)
        approver.logout()


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
    # The live part names the operation just asked for: queued, under way, then its outcome.
    expect(page.locator("#vm-op-notice")).to_contain_text(name)
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

"""Browser tier: Force off asks first, on its own page without JavaScript and in a dialog with
it, and a VM deleted while its page is open loses its forms, under the portal's
Content-Security-Policy (libvirt's test driver, no guest needed).

Screenshots go to $PORTAL_ARTIFACTS_DIR/browser/ (confirm-*.png).
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from operations.models import Operation, OperationKind
from tests.browser import test_hardening as hardening
from tests.browser.test_hardening import ARTIFACTS, Visitor
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.browser
browser = hardening.browser  # Chromium alone; not the walkthroughs' portal on real qemu


class Person(Visitor):
    """A visitor whose browser may have JavaScript switched off."""

    def __init__(self, chromium: object, live_server: object, *, javascript: bool) -> None:
        super().__init__(chromium, live_server)
        # A page of its own, without the parent's answer to every dialog: the test answers.
        self.context.close()
        self.context = chromium.new_context(viewport={"width": 1280, "height": 800},
                                           java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"confirm-{name}.png"), full_page=True)


def forced_off(vm: VirtualMachine) -> int:
    return Operation.objects.filter(vm=vm, kind=OperationKind.DESTROY).count()


def test_force_off_asks_on_a_page_without_javascript_and_in_a_dialog_with_it(
        browser, live_server, site):
    from playwright.sync_api import expect

    vm = VirtualMachine.objects.create(
        name="confirm-lab", owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.RUNNING)
    page_path = reverse("vms:vm_detail", args=[vm.pk])
    force_off = '#vm-actions button[data-action="destroy"]'

    plain = Person(browser, live_server, javascript=False)
    plain.sign_in(site.student)
    plain.goto(page_path)
    with plain.page.expect_navigation():
        plain.page.locator(force_off).click()
    expect(plain.page.locator("#confirmation h1")).to_have_text("Force off confirm-lab?")
    expect(plain.page.locator("#confirmation")).to_contain_text("like pulling the plug")
    plain.shot("force-off-no-js-1280")
    assert forced_off(vm) == 0
    with plain.page.expect_navigation():
        plain.page.locator('[data-action="back"]').click()
    assert plain.page.url.endswith(page_path) and forced_off(vm) == 0
    with plain.page.expect_navigation():
        plain.page.locator(force_off).click()
    with plain.page.expect_navigation():
        plain.page.locator('#confirm-form [data-action="confirm"]').click()
    assert forced_off(vm) == 1
    expect(plain.page.locator("#vm-op-notice")).to_contain_text("confirm-lab")
    plain.shot("force-off-no-js-done-1280")

    Operation.objects.filter(vm=vm).update(status="failed")
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.RUNNING)
    scripted = Person(browser, live_server, javascript=True)
    scripted.sign_in(site.student)
    scripted.goto(page_path)
    questions = []
    scripted.page.once("dialog", lambda d: (questions.append(d.message), d.dismiss()))
    scripted.page.locator(force_off).click()
    scripted.page.wait_for_timeout(500)
    assert questions and questions[0].startswith("Force off confirm-lab?")
    assert forced_off(vm) == 1 and scripted.page.url.endswith(page_path)
    scripted.page.once("dialog", lambda d: d.accept())
    with scripted.page.expect_navigation():
        scripted.page.locator(force_off).click()
    # The dialog's yes went with the post as confirmed=1: no page asked again.
    assert forced_off(vm) == 2
    expect(scripted.page.locator("#confirmation")).to_have_count(0)
    expect(scripted.page.locator("#vm-op-notice")).to_contain_text("confirm-lab")

    # Deleted while its page is open: the live part says the page is out of date, and the
    # page reloads without the forms it drew for an installed VM.
    expect(scripted.page.locator("#snapshot-form")).to_have_count(1)
    VirtualMachine.objects.filter(pk=vm.pk).update(state=VMState.DELETED)
    expect(scripted.page.locator("#snapshot-form")).to_have_count(0, timeout=15_000)
    expect(scripted.page.locator("#schedule-form")).to_have_count(0)
    expect(scripted.page.locator("#vm-live")).to_contain_text("This VM was deleted")
    scripted.shot("deleted-while-open-1280")
    assert not plain.csp and not scripted.csp, plain.csp + scripted.csp
    assert not scripted.errors, scripted.errors
    plain.context.close()
    scripted.context.close()

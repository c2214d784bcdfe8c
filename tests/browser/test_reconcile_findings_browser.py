"""Browser tier: the host page's Reconcile findings card on a phone and a desktop, and its
actions without JavaScript (delete asks on its own page; adopt is a form), under the portal's
Content-Security-Policy.

Screenshots go to $PORTAL_ARTIFACTS_DIR/browser/pages/ (admin-findings-*.png).
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from hosts.models import Host
from operations.models import Operation, OperationKind
from tests.browser import test_hardening as hardening
from tests.browser.narrow_pages import DESKTOP, PHONE, Visit
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.browser
browser = hardening.browser  # Chromium alone; no portal on real qemu is needed

VOLUME = "/srv/portal/local/vm-0123456789abcdef0123456789abcdef-left-behind.qcow2"


def test_findings_fit_a_phone_and_their_actions_work_without_javascript(
        browser, live_server, site):
    from playwright.sync_api import expect

    vm = VirtualMachine.objects.create(
        name="vanished-lab", owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=VMState.UNKNOWN,
        state_checked_at=timezone.now())
    Host.objects.filter(pk=site.host.pk).update(
        unknown_domains=["test", "stray-domain-left-by-an-old-portal"],
        missing_domains=[vm.name], orphan_volumes=[VOLUME], reconciled_at=timezone.now())
    visit = Visit(browser, live_server.url, "admin", site.admin, javascript=False)
    page = visit.page
    host_page = reverse("hosts:host_detail", args=[site.host.pk])
    for size in (PHONE, DESKTOP):
        visit.width(size)
        visit.goto(host_page)
        expect(page.locator("#reconcile-findings")).to_be_visible()
        scroll, window = visit.widths()
        assert scroll <= window, (size, scroll, window)
        assert visit.wrapped_buttons() == []
        visit.shot("findings", size)

    # Delete an orphan volume: a page says what happens; Confirm queues it.
    page.locator(f'[data-name="{VOLUME}"] button', has_text="Delete").click()
    expect(page.locator("#confirmation h1")).to_have_text(f"Delete volume {VOLUME}?")
    assert not Operation.objects.filter(kind=OperationKind.VOLUME_REMOVE).exists()
    page.locator('#confirm-form button[data-action="confirm"]').click()
    expect(page.locator("main")).to_contain_text(f"Deletion of {VOLUME} queued.")
    assert Operation.objects.get(kind=OperationKind.VOLUME_REMOVE).arguments == {
        "volume": VOLUME}

    # Adopt: the form, then the operation with the chosen owner.
    page.locator('[data-name="test"] a', has_text="Adopt").click()
    expect(page.locator("#adopt-domain h1")).to_have_text("Adopt a domain on hv1")
    page.select_option("select[name=owner]", value=str(site.student.pk))
    page.select_option("select[name=template]", value=str(site.template.pk))
    visit.shot("findings-adopt", PHONE)
    page.locator("#adopt-submit").click()
    expect(page.locator("main")).to_contain_text("Adoption of test queued")
    op = Operation.objects.get(kind=OperationKind.DOMAIN_ADOPT)
    assert op.arguments["owner"] == site.student.pk and op.requested_by == site.admin

    # Mark lost asks first too.
    page.locator(f'[data-name="{vm.name}"] button', has_text="Mark as lost").click()
    expect(page.locator("#confirmation h1")).to_have_text(f"Mark {vm.name} as lost?")
    visit.shot("findings-lost-confirm", PHONE)
    assert not visit.errors, visit.errors
    visit.close()

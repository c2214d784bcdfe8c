"""Browser tier: requests through the approval chain, and a VM's whole life, in Chromium.

A bad name is refused and a faculty rejection reaches the student; a request approved by faculty,
org-admin and admin is installed, suspended, resumed, forced off, started and deleted, and libvirt
is checked at each step. The portal runs as `make demo` runs it (see walkthrough_portal.py).
"""

from __future__ import annotations

import re

import pytest

from tests.browser.walkthrough_portal import dhcp_hosts, virsh
from tests.browser.walkthrough_user import (
    User,
    approve_through_the_chain,
    decide,
    expect_submitted,
    request_vm,
    vm_action,
    wait_for_operation,
)

pytestmark = pytest.mark.browser


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

    approve_through_the_chain(browser, portal, name)

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

"""Browser tier: the request form shows every error in one round; an unknown page has a way back."""

from __future__ import annotations

import pytest

from tests.browser.walkthrough_user import TEMPLATE, User

pytestmark = pytest.mark.browser


def test_every_error_shows_in_one_round_and_a_lost_page_leads_back(browser, portal) -> None:
    from playwright.sync_api import expect

    student = User(browser, portal, "student")
    student.login()
    student.nav("Request a VM")
    page = student.page
    page.select_option("#id_template", label=TEMPLATE)
    # The demo template allows 1-2 vCPUs and 128-1024 MiB; its bounds are on the inputs.
    expect(page.locator("#id_vcpus")).to_have_attribute("max", "2")
    expect(page.locator("#id_memory_mib")).to_have_attribute("min", "128")
    expect(page.locator("label[for=id_name] .text-danger")).to_have_text("*")
    page.fill("#id_name", "Bad_Name")
    page.fill("#id_vcpus", "9")
    page.fill("#id_memory_mib", "99999")
    page.fill("#id_purpose", "")
    page.get_by_role("button", name="Submit request").click()
    page.wait_for_load_state()
    summary = page.locator("#form-errors")
    for text in ("Name:", "vCPUs: Choose between 1 and 2", "RAM (MiB): Choose between 128 and 1024",
                 "Purpose:"):
        expect(summary).to_contain_text(text)
    expect(page.locator("#id_vcpus_error")).to_be_visible()
    expect(page.locator("#id_name_helptext")).to_have_count(0)
    student.shot("request-every-error")

    student.goto("/vms/999999/banana/")
    expect(page.locator("#error-page")).to_contain_text("There is nothing here")
    student.shot("not-found")
    page.locator("#error-home").click()
    page.wait_for_load_state()
    expect(page).to_have_url(portal.url + "/")
    # The 404 was the point of the visit; nothing else may have failed.
    student.errors = [e for e in student.errors if "/vms/999999/banana/" not in e]
    student.logout()

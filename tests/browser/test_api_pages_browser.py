"""Browser tier: the API tokens page and the API's Swagger UI and Redoc under the CSP.

A student makes a token on their tokens page (shown once), then opens the API's pages; any
Content-Security-Policy message or page error Chromium reports fails the test (but the
refusal of the Redoc logo its bundle links from outside).
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from api.models import ApiToken
from tests.browser.test_hardening import Visitor, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def test_token_page_and_api_pages_without_a_csp_violation(browser, live_server, site):  # noqa: F811
    from playwright.sync_api import expect

    student = Visitor(browser, live_server)
    student.sign_in(site.student)
    student.goto(reverse("tokens:token_list"))
    page = student.page
    page.fill("#id_name", "notebook")
    page.check("#id_read_only")
    with page.expect_navigation():
        page.get_by_role("button", name="Make token").click()
    shown = page.locator("#new-token-text").input_value()
    assert re.fullmatch(r"vmp_[0-9a-f]{12}_\S{43}", shown)
    assert ApiToken.objects.get().read_only
    student.shot("api-token-made")
    student.goto(reverse("tokens:token_list"))
    expect(page.locator("#new-token-text")).to_have_count(0)  # never shown again

    student.goto("/api/v1/docs/")
    expect(page.get_by_text("/api/v1/vms/", exact=True).first).to_be_visible()
    student.shot("api-swagger")
    student.goto("/api/v1/redoc/")
    expect(page.get_by_text("VM portal API").first).to_be_visible()
    student.shot("api-redoc")
    # Redoc's bundle links its maker's logo from outside; the policy refuses it, and that is
    # the one message allowed: nothing else is refused, nothing fails.
    refused = [m for m in student.csp if "cdn.redoc.ly/redoc/logo-mini.svg" not in m]
    assert refused == [] and student.errors == []

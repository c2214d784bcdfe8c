"""Browser tier: every page of every role on a 375 px phone and at 1280 px, and without JavaScript.

For each role of the permission matrix, every whole HTML page it may open is loaded in Chromium
at 375x740 (the document must not scroll sideways) and at 1280 px (nor there; the navigation
bar keeps to one line, the admin's with its pending-approvals badge). Then, with JavaScript
off, the same pages must offer everything the role can do: the collapsed menu and the user
menu open, Log out and (for staff) Administration are there and work, and every button of
every form is visible. The portal is pytest-django's live server on the fast tier's site and
the matrix's objects (see tests/browser/narrow_pages.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.chromium import chromium
from tests.browser.narrow_pages import DESKTOP, PHONE, Visit, add_long_names, html_pages
from tests.portal.test_permission_matrix import ROLES, objects  # noqa: F401 - its fixture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One Chromium for the module (this file's own: no demo portal is needed)."""
    with chromium() as launched:
        yield launched


def _user(site: object, role: str) -> object | None:
    return None if role == "anon" else site.users[role]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_fits_a_phone_and_a_desktop(browser, live_server, site, request, role):
    from playwright.sync_api import expect

    matrix = request.getfixturevalue("objects")

    add_long_names(site, matrix)
    pages = html_pages(site, matrix, role)
    assert pages, role
    if role == "admin":
        # A name as long as a real admin's: the bar must keep to one line with it and the badge.
        type(site.admin).objects.filter(pk=site.admin.pk).update(username="administrator")
    visit = Visit(browser, live_server.url, role, _user(site, role))
    too_wide, wrapped = [], []
    for name, path in pages.items():
        response = visit.goto(path)
        assert response.status == 200, (name, response.status)
        scroll, window = visit.widths()
        if scroll > PHONE["width"] or scroll > window:
            too_wide.append(f"{name} is {scroll}px wide at {PHONE['width']}px")
        wrapped += [f"{name}: button {label!r} wraps at {PHONE['width']}px"
                    for label in visit.wrapped_buttons()]
        visit.shot(name, PHONE)
        visit.width(DESKTOP)
        scroll, window = visit.widths()
        if scroll > window:
            too_wide.append(f"{name} is {scroll}px wide at {DESKTOP['width']}px")
        rows = visit.nav_rows()
        if rows and max(rows) - min(rows) > 4:
            wrapped.append(f"{name}: navigation entries at heights {sorted(set(rows))} "
                           f"at {DESKTOP['width']}px")
        visit.shot(name, DESKTOP)
        visit.width(PHONE)
    assert not too_wide, "pages scroll sideways:\n" + "\n".join(too_wide)
    assert not wrapped, "buttons or the navigation bar wrap:\n" + "\n".join(wrapped)

    if role != "anon":
        # With JavaScript the menus behave as well: open on a tap, the user menu closes again
        # on a tap elsewhere.
        page = visit.page
        visit.goto(pages["dashboard"])
        expect(page.locator("#nav .nav-link").first).to_be_hidden()
        page.locator("nav .navbar-toggler").click()
        expect(page.locator("#nav .nav-link").first).to_be_visible()
        page.locator("nav .dropdown-toggle").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        page.locator("main h1").click()
        expect(page.get_by_role("button", name="Log out")).to_be_hidden()
        if role == "admin":
            visit.width(DESKTOP)
            expect(page.locator("nav .navbar-nav .badge.text-bg-warning")).to_be_visible()
            visit.shot("dashboard-badge", DESKTOP)
    assert not visit.errors, visit.errors
    visit.close()


@pytest.mark.parametrize("role", ROLES)
def test_every_action_is_reachable_without_javascript(browser, live_server, site, request, role):
    from playwright.sync_api import expect

    matrix = request.getfixturevalue("objects")

    add_long_names(site, matrix)
    pages = html_pages(site, matrix, role)
    user = _user(site, role)
    visit = Visit(browser, live_server.url, role, user, javascript=False)
    page = visit.page
    unseen = []
    for name, path in pages.items():
        visit.goto(path)
        unseen += [f"{name}: {label}" for label in visit.hidden_buttons()]
        if user is None or name.startswith("admin:"):  # Django's admin has its own bar
            continue
        # The collapsed menu opens without JavaScript, and so does the user menu inside it.
        links = page.locator("#nav .navbar-nav .nav-link")
        expect(links.first).to_be_hidden()
        page.locator("nav .navbar-toggler").click()
        expect(links.first).to_be_visible()
        page.locator("nav .dropdown-toggle").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        expect(page.locator("nav").get_by_role("link", name="Administration")).to_have_count(
            1 if user.is_staff else 0)
        if name == "dashboard":
            visit.shot("dashboard-nojs-menu", PHONE)
    assert not unseen, "form buttons nobody can see without JavaScript:\n" + "\n".join(unseen)
    if user is None:
        visit.close()
        return

    # The operations filter submits with its own button.
    visit.goto(pages["vms:operation_list"])
    page.select_option("select[name=status]", "failed")
    page.locator("#operations-filter").click()
    assert "status=failed" in page.url, page.url

    # At 1280 px the user menu opens as a dropdown.
    visit.width(DESKTOP)
    visit.goto(pages["dashboard"])
    expect(page.get_by_role("button", name="Log out")).to_be_hidden()
    page.locator("nav .dropdown-toggle").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    visit.shot("dashboard-nojs-menu", DESKTOP)
    if user.is_staff:
        page.locator("nav").get_by_role("link", name="Administration").click()
        expect(page.locator("#site-name, h1").first).to_be_visible()
        assert page.url.rstrip("/").endswith("/admin"), page.url
        visit.goto(pages["dashboard"])
        page.locator("nav .dropdown-toggle").click()
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#id_username")).to_be_visible()
    visit.goto(pages["dashboard"])
    assert "/accounts/login/" in page.url, page.url
    visit.close()

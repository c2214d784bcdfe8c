"""Browser tier: the host page of a host the health check marked down, with power configured,
on a phone and a desktop; power off asks in a dialog and, once confirmed, is queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.chromium import chromium
from tests.browser.narrow_pages import DESKTOP, PHONE, Visit

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def test_a_host_marked_down_shows_its_checks_and_power(browser, live_server, site, settings):
    from hosts.health_check import host_health_check
    from hosts.models import Host, HostStatus, PowerMethod
    from operations.models import Operation, OperationKind

    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "MIN_FREE_GIB": 10_000,
                                   "FAILS_BEFORE_DOWN": 1}
    Host.objects.filter(pk=site.host.pk).update(
        power_method=PowerMethod.SSH, address="10.0.0.5")
    host_health_check(site.host)
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.DOWN

    visit = Visit(browser, live_server.url, "admin", site.admin)
    try:
        visit.goto(f"/hosts/{site.host.pk}/")
        for size in (PHONE, DESKTOP):
            visit.width(size)
            scroll, window = visit.widths()
            assert scroll <= window, (size, scroll)
            assert visit.wrapped_buttons() == []
            visit.shot("host-down", size)
        page = visit.page
        assert page.locator('[data-check="disk"][data-ok="no"]').is_visible()
        assert page.locator("#host-down-reason").inner_text().startswith(
            "The health check failed once in a row")
        # A page of its own, without Visit's answer to every dialog: the test answers yes,
        # and the post carries the confirmation (no question page).
        asking = visit.context.new_page()
        asking.goto(f"{live_server.url}/hosts/{site.host.pk}/")
        questions = []
        asking.once("dialog", lambda d: (questions.append(d.message), d.accept()))
        with asking.expect_navigation():
            asking.click("#host-power-off")
        assert questions == ["Power off hv1? It stays off until powered on again."]
        assert asking.locator("#confirmation").count() == 0
        assert "Power off of hv1 queued" in asking.content()
        assert Operation.objects.filter(kind=OperationKind.HOST_POWER_OFF).count() == 1
    finally:
        visit.close()

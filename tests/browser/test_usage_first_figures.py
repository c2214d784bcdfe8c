"""Browser tier: a fresh VM's usage, on the real portal with its worker and a real qemu guest.

The VM is requested, approved and installed as in the walkthroughs; from the moment its page
says Running, a CPU graph with data (not the "no figures yet" line) must be on the page within
60 s, rendered by the server: the page is reloaded, and a browser without JavaScript sees the
same panel. The graph's SVG must carry CPU points with numbers.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest

from tests.browser.walkthrough_portal import ARTIFACTS
from tests.browser.walkthrough_user import (
    User,
    approve_through_the_chain,
    expect_submitted,
    request_vm,
    wait_for_operation,
)

pytestmark = pytest.mark.browser

FIRST_FIGURES_SECONDS = 60
SVG = "{http://www.w3.org/2000/svg}"


def cpu_points(svg: bytes) -> list[float]:
    """Return the CPU percentages of the drawn points of a graph's SVG."""
    root = ET.fromstring(svg)
    values = [d.text for d in root.iter(f"{SVG}desc") if d.get("class") == "value" and d.text]
    return [float(m[1]) for v in values if (m := re.search(r"([\d.]+) %$", v))]


def test_a_fresh_vm_shows_a_cpu_line_within_a_minute_of_running(browser, portal) -> None:
    from playwright.sync_api import expect

    name = portal.new_vm_name()
    student = User(browser, portal, "student")
    student.login()
    student.nav("Request a VM")
    request_vm(student, name, "Usage graphs: a tiny guest whose first figures are awaited.")
    expect_submitted(student, f"Request {name} submitted")
    student.logout()
    approve_through_the_chain(browser, portal, name)

    student = User(browser, portal, "student")
    student.login()
    student.nav("My VMs")
    student.page.locator("main table tbody tr", has_text=name).get_by_role(
        "link", name=name).click()
    page = student.page
    wait_for_operation(student, "install")
    expect(page.locator("#vm-state [data-state]")).to_have_attribute("data-state", "running")
    running_at = time.monotonic()
    vm_url = page.url.split("?")[0].split("#")[0]

    # Right away the panel is in the page: figures, or one line saying when they come.
    page.goto(vm_url)
    panel = page.locator("#usage .usage-panel")
    expect(panel).to_be_visible()
    empty = page.locator("#usage-empty")
    if empty.count():
        expect(empty).to_contain_text("Figures appear about a minute after the VM starts")
    student.shot("usage-just-running")

    # Reload until the page's CPU graph draws a line (two points or more), at most 60 s.
    cpu_graph = page.locator('#usage [data-graph="cpu"] img.usage-graph')
    points: list[float] = []
    svg = b""
    while time.monotonic() - running_at < FIRST_FIGURES_SECONDS:
        if cpu_graph.count():
            response = student.context.request.get(portal.url + cpu_graph.get_attribute("src"))
            assert response.status == 200, response.status
            svg = response.body()
            points = cpu_points(svg)
            if len(points) >= 2:
                break
        page.wait_for_timeout(3000)
        page.goto(vm_url)
    elapsed = time.monotonic() - running_at
    assert cpu_graph.count(), (
        f"no CPU graph {elapsed:.0f} s after {name} was running: "
        + page.locator("#usage").inner_text())
    assert len(points) >= 2, f"CPU points {elapsed:.0f} s after running: {points}"
    assert all(0 <= p <= 100 for p in points)
    expect(page.locator('#usage-averages [data-latest="cpu"]')).to_have_text(
        re.compile(r"^\d+\.\d %$"))
    expect(page.locator('#usage-averages [data-metric="memory"]')).to_have_text(
        re.compile(r"^[\d.]+ (KiB|MiB|GiB)$"))
    # The graph is an image the browser loaded, and it draws CPU points, not "No data yet".
    expect(cpu_graph).to_have_js_property("complete", True)
    assert cpu_graph.evaluate("img => img.naturalWidth") > 0
    src = cpu_graph.get_attribute("src")
    assert re.fullmatch(r"/vms/\d+/graphs/cpu/hour\.svg\?v=\d+", src), src
    assert not [t for t in ET.fromstring(svg).iter(f"{SVG}text")
                if "no_data" in (t.get("class") or "")]
    lines = [p for p in ET.fromstring(svg).iter(f"{SVG}path")
             if "line" in (p.get("class") or "").split()]
    assert lines, "the CPU graph has no line"
    (ARTIFACTS / "usage-cpu-first-figures.svg").write_bytes(svg)
    page.locator("#usage").scroll_into_view_if_needed()
    student.shot("usage-first-figures")

    # Without JavaScript the same panel, with the same graph, is in the page.
    plain = browser.new_context(java_script_enabled=False, viewport={"width": 1366, "height": 900})
    try:
        nojs = plain.new_page()
        nojs.goto(portal.url + "/accounts/login/")
        nojs.fill("#id_username", "student")
        nojs.fill("#id_password", portal.passwords["student"])
        nojs.get_by_role("button", name="Log in").click()
        nojs.wait_for_load_state()
        nojs.goto(vm_url)
        expect(nojs.locator('#usage [data-graph="cpu"] img.usage-graph')).to_have_count(1)
        expect(nojs.locator("#usage")).not_to_contain_text("Loading")
        nojs.locator('#usage nav a[data-period="day"]').click()
        nojs.wait_for_load_state()
        assert "period=day" in nojs.url
        expect(nojs.locator('#usage nav a[aria-current="true"]')).to_have_text("Day")
        # Less than a minute old, the VM has no complete five-minute row: the line says so.
        expect(nojs.locator("#usage-empty")).to_contain_text("the last hour has figures now",
                                                             ignore_case=True)
        nojs.screenshot(path=str(ARTIFACTS / "usage-without-javascript.png"), full_page=True)
    finally:
        plain.close()

    with page.expect_navigation():
        page.locator('#vm-actions button[data-action="delete"]').click()
    wait_for_operation(student, "delete")
    student.logout()

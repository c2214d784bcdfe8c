"""The usage panel inside the VM and host pages: rendered by the server, in IEC units."""

from __future__ import annotations

import re
import time

import pytest
from django.urls import reverse

from monitoring.collector import host_key, rrd_store, vm_key
from tests.monitoring.test_views import vm, with_history  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def page(site, user, name, pk, **params) -> str:
    response = site.client(user).get(reverse(name, args=[pk]), params)
    assert response.status_code == 200
    return response.content.decode()


def test_the_vm_page_carries_its_graphs_and_averages_without_javascript(site, vm):  # noqa: F811
    with_history(vm)
    body = page(site, site.student, "vms:vm_detail", vm.pk)

    assert "Loading usage" not in body
    assert 'class="usage-panel"' in body
    # The figures are in the page itself, not fetched by a script afterwards.
    assert re.search(r'data-metric="cpu">\d+\.\d %', body)
    for metric in ("cpu", "memory", "disk_read", "disk_write", "net_rx", "net_tx"):
        assert re.search(
            rf'<img class="usage-graph[^>]* src="/vms/{vm.pk}/graphs/{metric}/hour\.svg\?v=\d+"',
            body), metric
    # Two hours of history open on the hour; the period links work as plain links.
    assert re.search(r'href="\?period=day#usage"', body)
    assert re.search(r'aria-current="true"\s+href="\?period=hour#usage"', body)


def test_a_period_chosen_by_link_is_rendered_by_the_page(site, vm):  # noqa: F811
    with_history(vm)
    body = page(site, site.student, "vms:vm_detail", vm.pk, period="week")
    assert f"/vms/{vm.pk}/graphs/cpu/week.svg" in body
    assert re.search(r'aria-current="true"\s+href="\?period=week#usage"', body)
    # A period the page does not know falls back to the default instead of failing the page.
    body = page(site, site.student, "vms:vm_detail", vm.pk, period="decade")
    assert f"/vms/{vm.pk}/graphs/cpu/hour.svg" in body


def test_averages_use_iec_units_like_the_graphs(site, vm):  # noqa: F811
    with_history(vm)  # memory 1e9 bytes, disk read 100 B/s
    body = page(site, site.student, "vms:vm_detail", vm.pk)
    assert 'data-metric="memory">953.7 MiB' in body
    assert 'data-metric="disk_read">100 B/s' in body
    assert 'data-latest="cpu">21.0 %' in body
    assert not re.search(r"\d (KB|MB|GB)\b", body)


def test_a_vm_without_figures_gets_one_line_saying_when_they_come(site, vm):  # noqa: F811
    body = page(site, site.student, "vms:vm_detail", vm.pk)

    line = re.search(r'<p[^>]*id="usage-empty"[^>]*>(.*?)</p>', body, re.S)
    assert line and ("Figures appear about a minute after the VM starts; collected every 300 s."
                     in line.group(1))
    assert "usage-graph" not in body and "No data yet" not in body
    # The panel asks again soon, so the first figures show up without a reload.
    assert re.search(r'class="usage-panel"[^>]*hx-trigger="every 15s"', body, re.S)


def test_a_metric_without_figures_gets_a_line_instead_of_an_empty_graph(site, vm):  # noqa: F811
    now = int(time.time()) // 300 * 300
    rrd_store().update_many({("vm", vm_key(vm)): [(now - 300, {"memory": 5e8})]})
    body = page(site, site.student, "vms:vm_detail", vm.pk)

    assert f"/vms/{vm.pk}/graphs/memory/hour.svg" in body
    assert f"/vms/{vm.pk}/graphs/cpu/hour.svg" not in body
    assert "CPU: no figures for the last hour yet" in body


def test_the_host_page_carries_its_usage_panel(site):
    now = int(time.time()) // 300 * 300
    rrd_store().update_many({("host", host_key(site.host)): [
        (now - 600 + i * 300, {"cpu": 30.0, "memory": 3 * 1024**3}) for i in range(3)]})
    body = page(site, site.admin, "hosts:host_detail", site.host.pk)

    assert "Loading usage" not in body
    assert f"/hosts/{site.host.pk}/graphs/cpu/hour.svg" in body
    assert 'data-metric="memory">3.0 GiB' in body


def test_the_usage_url_renders_the_same_panel_for_htmx(site, vm):  # noqa: F811
    with_history(vm)
    inline = page(site, site.student, "vms:vm_detail", vm.pk, period="day")
    partial = page(site, site.student, "monitoring:vm_usage", vm.pk, period="day")
    start = inline.index('<div class="usage-panel"')
    assert partial.strip() in inline[start - 200:]
    assert f'hx-get="/vms/{vm.pk}/usage/?period=day"' in partial


def test_a_longer_period_without_a_complete_row_points_to_the_hour(site, vm):  # noqa: F811
    now = int(time.time())
    rrd_store().update_many({("vm", vm_key(vm)): [(now - 40, {"memory": 5e8}),
                                                   (now - 20, {"memory": 5e8})]})
    body = page(site, site.student, "vms:vm_detail", vm.pk, period="day")

    line = re.search(r'<p[^>]*id="usage-empty"[^>]*>(.*?)</p>', body, re.S).group(1)
    assert "averages over 5 minutes; the first comes when one is complete" in line
    assert 'href="?period=hour#usage"' in line
    assert "about a minute after the VM starts" not in line

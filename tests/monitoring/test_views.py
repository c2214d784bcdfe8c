"""Graph and usage pages: valid images, no data said plainly, and only for those who may see."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from monitoring.collector import rrd_store, vm_key
from tests.vms.test_lifecycle import install

pytestmark = pytest.mark.django_db


@pytest.fixture
def vm(site, django_capture_on_commit_callbacks):
    vm, _ = install(site, django_capture_on_commit_callbacks)
    from vms.models import VirtualMachine

    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    vm.refresh_from_db()
    return vm


def with_history(vm):
    import time

    now = int(time.time()) // 300 * 300
    rrd_store().update_many({("vm", vm_key(vm)): [
        (now - 3600 + i * 300, {"cpu": 10.0 + i, "memory": 1e9, "disk_read": 100.0,
                                "disk_write": 50.0, "net_rx": 10.0, "net_tx": 5.0})
        for i in range(12)]})


def test_png_and_svg_graphs_are_valid_images(site, vm):
    with_history(vm)
    client = site.client(site.student)
    png = client.get(reverse("monitoring:vm_graph_png", args=[vm.pk, "cpu", "hour"]))
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    svg = client.get(reverse("monitoring:vm_graph_svg", args=[vm.pk, "cpu", "hour"]))
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg") and "lab1" in svg.content.decode()


def test_a_graph_without_data_says_so(site, vm):
    svg = site.client(site.student).get(
        reverse("monitoring:vm_graph_svg", args=[vm.pk, "net_rx", "day"]))
    assert b"No data yet" in svg.content
    usage = site.client(site.student).get(reverse("monitoring:vm_usage", args=[vm.pk]))
    assert "Figures appear about a minute after the VM starts" in usage.content.decode()


def test_usage_shows_the_averages_of_the_period(site, vm):
    with_history(vm)
    body = site.client(site.student).get(reverse("monitoring:vm_usage", args=[vm.pk]),
                                         {"period": "day"}).content.decode()
    # 11.0 .. 21.0: the first sample (10.0) fills only its own 10 s row, no day row.
    assert 'data-metric="cpu">16.0 %' in body
    assert "No data yet" not in body


@pytest.mark.parametrize(("metric", "period"), [
    ("bogus", "day"), ("cpu", "decade"), ("..", "day"), ("cpu", "..%2Fetc%2Fpasswd"),
])
def test_unknown_metrics_and_periods_answer_404(site, vm, metric, period):
    url = f"/vms/{vm.pk}/graphs/{metric}/{period}.png"
    assert site.client(site.student).get(url).status_code == 404


def test_an_unknown_usage_period_answers_404(site, vm):
    response = site.client(site.student).get(reverse("monitoring:vm_usage", args=[vm.pk]),
                                             {"period": "forever"})
    assert response.status_code == 404


def test_someone_elses_vm_graph_answers_404(site, vm):
    url = reverse("monitoring:vm_graph_png", args=[vm.pk, "cpu", "day"])
    assert site.client(site.other_student).get(url).status_code == 404
    assert site.client(site.student).get(url).status_code == 200


def test_graphs_are_cached_for_one_step(site, vm, monkeypatch):
    from monitoring import views

    calls = []
    real = views.render_png
    monkeypatch.setattr(views, "render_png", lambda *a, **k: calls.append(a) or real(*a, **k))
    url = reverse("monitoring:vm_graph_png", args=[vm.pk, "memory", "week"])
    client = site.client(site.student)
    first, second = client.get(url), client.get(url)
    assert first.content == second.content and len(calls) == 1


def test_host_overview_is_sortable_and_shows_capacity(site):
    body = site.client(site.admin).get(reverse("hosts:host_list"), {"sort": "-vm_count"})
    text = body.content.decode()
    assert body.status_code == 200 and "hv1" in text and "RAM free" in text
    assert "15360 MiB" in text  # 16384 physical - 1024 reserved, nothing placed yet

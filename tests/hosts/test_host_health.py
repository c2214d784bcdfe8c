"""The periodic health check: each check recorded with its last pass, a host failing too many
checks in a row marked down once with one admin mail, never put back up by itself."""

from __future__ import annotations

import socket

import pytest
from django.urls import reverse

from hosts.health_check import host_health_check, host_peer
from hosts.models import Host, HostStatus
from hosts.tasks import health_check_all, health_check_host
from hosts.virt import Hypervisor
from operations.models import AdminAlert, Operation, OperationKind
from portal.schedules import schedules_declared
from tests import factories as f

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def health(settings):
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "FAILS_BEFORE_DOWN": 3,
                                   "MIN_FREE_GIB": 10, "REACH_TIMEOUT": 2.0}
    return settings.PORTAL_HOST_HEALTH


@pytest.fixture
def dead(site):
    """A host nothing listens for: its libvirt port refuses connections."""
    return f.HostFactory(name="hv-dead", uri=f"qemu+tcp://127.0.0.1:{closed_port()}/system")


def checks(host: Host) -> dict[str, dict]:
    host.refresh_from_db()
    return host.health_checks


def test_a_healthy_host_passes_every_check(site, health):
    host = host_health_check(site.host)
    result = checks(host)
    # Shown in a fixed order whatever order the database keeps the keys in (jsonb sorts).
    assert set(result) == {"reachable", "libvirtd", "pools", "networks", "disk"}
    assert [row["name"] for row in host.health_rows] == [
        "reachable", "libvirtd", "pools", "networks", "disk"]
    assert all(c["ok"] and c["last_passed"] for c in result.values())
    assert result["reachable"]["detail"] == "this machine"
    # The VLANs' libvirt networks (default for campus, private) are looked for.
    assert result["networks"]["detail"] == "default, private up"
    assert "local" in result["disk"]["detail"]
    assert host.health_failures == 0 and host.health_state == "ok"


def test_free_disk_below_the_threshold_fails(site, health, settings):
    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000}
    result = checks(host_health_check(site.host))
    assert not result["disk"]["ok"]
    assert result["disk"]["detail"].startswith("below 10000 GiB: local has")
    assert result["pools"]["ok"]


def test_an_inactive_pool_and_a_missing_network_fail(site, health):
    Hypervisor(site.host.uri)._conn().storagePoolLookupByName(
        site.datastore.pool_name).destroy()
    f.VLANFactory(name="lab", tag=30, subnet="10.30.0.0/24", network_name="labnet")
    result = checks(host_health_check(site.host))
    assert result["pools"] == {**result["pools"], "ok": False, "detail": "not active: local"}
    assert result["networks"]["detail"] == "labnet missing"
    assert not result["networks"]["ok"]


def test_an_unreachable_host_fails_and_later_checks_are_not_tried(dead, health):
    result = checks(host_health_check(dead))
    assert not result["reachable"]["ok"]
    assert "no TCP connection to 127.0.0.1" in result["reachable"]["detail"]
    assert result["libvirtd"]["detail"] == "not tried: the host is not reachable"
    assert all(not c["ok"] and c["last_passed"] is None for c in result.values())


def test_the_peer_of_each_transport():
    assert host_peer(Host(uri="qemu:///system")) is None
    assert host_peer(Host(uri="test:///default")) is None
    assert host_peer(Host(uri="qemu+ssh://root@kvm1.example.org/system")) == (
        "kvm1.example.org", 22)
    assert host_peer(Host(uri="qemu+tcp://kvm2:1234/system")) == ("kvm2", 1234)
    assert host_peer(Host(uri="qemu://kvm3/system")) == ("kvm3", 16514)


def test_a_failing_check_keeps_when_it_last_passed(site, health, settings):
    passed = checks(host_health_check(site.host))["disk"]["last_passed"]
    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000}
    again = checks(host_health_check(site.host))
    assert not again["disk"]["ok"] and again["disk"]["last_passed"] == passed
    assert again["pools"]["ok"] and again["pools"]["last_passed"] > passed


def test_three_failures_in_a_row_mark_the_host_down_and_mail_admins_once(
        dead, health, mailoutbox):
    for _ in range(2):
        host_health_check(dead)
    dead.refresh_from_db()
    assert dead.status == HostStatus.UP and dead.health_failures == 2
    assert mailoutbox == []

    host_health_check(dead)
    dead.refresh_from_db()
    assert dead.status == HostStatus.DOWN and dead.down_by_check
    assert dead.down_reason.startswith("The health check failed 3 times in a row (Reachable:")
    ops = Operation.objects.filter(host=dead, kind=OperationKind.HOST_DOWN)
    assert ops.count() == 1 and ops.get().admin_alert == AdminAlert.SENT
    assert len(mailoutbox) == 1
    assert "Health check of hv-dead failed" in mailoutbox[0].subject
    assert "adm@example.org" in mailoutbox[0].to

    # Still failing: no second mark, no second mail.
    host_health_check(dead)
    dead.refresh_from_db()
    assert dead.health_failures == 4 and len(mailoutbox) == 1
    assert Operation.objects.filter(host=dead, kind=OperationKind.HOST_DOWN).count() == 1


def test_a_passing_check_resets_the_count(site, health, settings):
    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000}
    host_health_check(site.host)
    host_health_check(site.host)
    settings.PORTAL_HOST_HEALTH = health
    host = host_health_check(site.host)
    assert host.health_failures == 0 and host.status == HostStatus.UP


@pytest.mark.parametrize("status", [HostStatus.MAINTENANCE, HostStatus.DOWN])
def test_a_host_out_of_service_is_checked_but_not_marked(dead, health, status, mailoutbox):
    Host.objects.filter(pk=dead.pk).update(status=status)
    for _ in range(4):
        host_health_check(dead)
    dead.refresh_from_db()
    assert dead.status == status and not dead.down_by_check and dead.health_failures == 4
    assert mailoutbox == []


def test_a_host_marked_down_that_passes_again_stays_down(site, health, settings):
    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000, "FAILS_BEFORE_DOWN": 1}
    host = host_health_check(site.host)
    assert host.status == HostStatus.DOWN and host.down_by_check
    settings.PORTAL_HOST_HEALTH = health
    host = host_health_check(site.host)
    assert host.status == HostStatus.DOWN and host.passes_again

    page = site.client(site.admin).get(reverse("hosts:host_detail", args=[host.pk]))
    html = page.content.decode()
    assert 'id="host-passes-again"' in html and "it passes again now" in html
    assert 'id="host-mark-up"' in html


def test_the_host_page_shows_each_check_and_the_list_a_badge(site, health, settings):
    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000}
    host_health_check(site.host)
    admin = site.client(site.admin)
    html = admin.get(reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert 'id="host-health"' in html
    assert 'data-check="pools" data-ok="yes"' in html
    assert 'data-check="disk" data-ok="no"' in html
    assert "Last passed: never" in html
    listing = admin.get(reverse("hosts:host_list")).content.decode()
    assert 'data-health="failing"' in listing


def test_a_host_never_checked_says_so(site):
    admin = site.client(site.admin)
    html = admin.get(reverse("hosts:host_detail", args=[site.host.pk])).content.decode()
    assert "Not checked yet" in html
    assert 'data-health="unknown"' in admin.get(reverse("hosts:host_list")).content.decode()


def test_the_schedule_is_declared_from_the_setting(settings):
    settings.PORTAL_HOST_HEALTH = {**settings.PORTAL_HOST_HEALTH, "EVERY_MINUTES": 7}
    spec = {s["name"]: s for s in schedules_declared()}["portal-host-health"]
    assert spec["func"] == "hosts.tasks.health_check_all"
    assert spec["schedule_type"] == "I" and spec["minutes"] == 7


def test_the_periodic_task_queues_one_check_per_host(site, dead, monkeypatch, health):
    calls = []
    monkeypatch.setattr("hosts.tasks.async_task",
                        lambda func, *args, **kw: calls.append((func, args)))
    assert health_check_all() == {"hv1": "queued", "hv-dead": "queued"}
    assert sorted(calls) == sorted(("hosts.tasks.health_check_host", (h.pk,))
                                   for h in (site.host, dead))
    assert health_check_host(site.host.pk) == {"host": "hv1", "state": "ok", "status": "up"}
    assert health_check_host(10**6) == {"skipped": "no such host"}


def test_retrying_the_record_of_a_host_marked_down_checks_it_again(
        site, health, settings, django_capture_on_commit_callbacks):
    from operations.models import OperationStatus
    from operations.requests import operation_retry
    from operations.tasks import run_operation

    settings.PORTAL_HOST_HEALTH = {**health, "MIN_FREE_GIB": 10_000, "FAILS_BEFORE_DOWN": 1}
    host_health_check(site.host)
    op = Operation.objects.get(host=site.host, kind=OperationKind.HOST_DOWN)
    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.FAILED
    assert op.message.startswith("hv1 still fails its health check (Free disk: below")

    settings.PORTAL_HOST_HEALTH = health
    with django_capture_on_commit_callbacks(execute=False):
        operation_retry(operation=op, actor=site.admin)
    run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED
    assert op.message == "hv1 passes its health check again; mark it up from its page."
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.DOWN

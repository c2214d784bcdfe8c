"""Maintenance and marking up from the host page: admins only, by POST, said in words."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hosts.health_check import host_health_check
from hosts.models import Host, HostStatus
from hosts.placement import NoHostAvailable, host_choose
from vms.models import VirtualMachine, VMState

pytestmark = pytest.mark.django_db


def post(site, name, host, user=None):
    client = site.client(user or site.admin)
    return client.post(reverse(name, args=[host.pk]), follow=True)


def page(site, host) -> str:
    return site.client(site.admin).get(reverse("hosts:host_detail", args=[host.pk])) \
        .content.decode()


def vm_on(site, name, state=VMState.RUNNING):
    return VirtualMachine.objects.create(
        name=name, owner=site.student, organisation=site.org, template=site.template,
        host=site.host, vcpus=1, memory_mib=512, disk_gib=2, state=state)


def test_the_up_host_page_says_what_maintenance_means(site):
    html = page(site, site.host)
    assert 'id="host-maintenance"' in html
    assert "no new VM is placed here" in html and "moved to other hosts with room" in html


def test_entering_maintenance_asks_for_one_evacuation(site):
    vm_on(site, "web")
    vm_on(site, "db", state=VMState.SHUTOFF)
    response = post(site, "hosts:host_maintenance", site.host)
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.MAINTENANCE
    text = response.content.decode()
    assert "hv1 is in maintenance: no new VM is placed there." in text
    assert "The VMs left on hv1 are being moved to other hosts." in text
    assert 'id="host-maintenance-leave"' in text and 'id="host-evacuation"' in text
    assert "Still here:" in text
    evacuation = site.host.operations.get(kind="evacuate")
    assert evacuation.requested_by == site.admin and evacuation.status == "queued"
    with pytest.raises(NoHostAvailable):
        host_choose(vcpus=1, memory_mib=256, template=site.template)


def test_leave_maintenance_is_one_click(site):
    Host.objects.filter(pk=site.host.pk).update(status=HostStatus.MAINTENANCE)
    response = post(site, "hosts:host_maintenance_leave", site.host)
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP
    assert "hv1 left maintenance and takes new VMs again." in response.content.decode()


def test_leaving_maintenance_when_not_in_it_is_refused(site):
    response = post(site, "hosts:host_maintenance_leave", site.host)
    assert "hv1 is not in maintenance (Up)." in response.content.decode()
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP


def test_a_down_host_is_marked_up_only_after_a_passing_check(site, settings):
    Host.objects.filter(pk=site.host.pk).update(
        status=HostStatus.DOWN, down_by_check=True, down_reason="The health check failed")
    site.host.refresh_from_db()
    assert 'id="host-mark-up"' not in page(site, site.host)
    response = post(site, "hosts:host_mark_up", site.host)
    assert "did not pass its last health check" in response.content.decode()
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.DOWN

    host_health_check(site.host)
    assert 'id="host-mark-up"' in page(site, site.host)
    response = post(site, "hosts:host_mark_up", site.host)
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP
    assert not site.host.down_by_check and site.host.down_reason == ""
    assert "hv1 is up and takes new VMs again." in response.content.decode()


def test_other_roles_cannot_change_a_hosts_status(site):
    for name in ("hosts:host_maintenance", "hosts:host_power_off"):
        assert site.client(site.orgadmin).post(
            reverse(name, args=[site.host.pk])).status_code == 404
    site.host.refresh_from_db()
    assert site.host.status == HostStatus.UP

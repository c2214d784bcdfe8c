"""The admin's pool pages: use, filters, range forms with inline errors."""

from __future__ import annotations

import pytest
from django.urls import reverse

from networking.models import PrivateIP, PublicIP
from operations.models import Operation, OperationKind
from tests import factories as f
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def test_overview_shows_vlans_domains_and_public_use(site):
    f.make_public_pool(3)
    body = site.client(site.admin).get(reverse("networking:overview")).content.decode()
    assert "campus" in body and "Research" in body and "Computer Science" in body
    assert "0 taken of 5" in body and "0 <span" in body


def test_vlan_page_filters_free_and_taken_addresses(site):
    ip = PrivateIP.objects.filter(vlan=site.vlan).first()
    ip.host = site.host
    ip.save()
    url = reverse("networking:vlan_detail", args=[site.vlan.pk])
    admin = site.client(site.admin)
    taken = admin.get(url, {"state": "taken"}).content.decode()
    assert ip.address in taken and "host hv1" in taken and "192.168.122.101" not in taken
    free = admin.get(url, {"state": "free"}).content.decode()
    assert ip.address not in free and "192.168.122.101" in free
    found = admin.get(url, {"q": ip.mac}).content.decode()
    assert ip.address in found and "192.168.122.102" not in found


def test_a_good_range_is_added_with_a_message(site):
    url = reverse("networking:vlan_detail", args=[site.vlan.pk])
    response = site.client(site.admin).post(url, {"first": "192.168.122.10",
                                                  "last": "192.168.122.12"}, follow=True)
    assert "Added 3 address(es) to campus" in response.content.decode()
    assert PrivateIP.objects.filter(address__in=["192.168.122.10", "192.168.122.12"]).count() == 2


@pytest.mark.parametrize(("data", "error"), [
    ({"first": "192.168.122.12", "last": "192.168.122.10"}, "reversed"),
    ({"first": "192.168.122.99", "last": "192.168.122.101"}, "Already in a pool"),
    ({"first": "10.0.0.1", "last": "10.0.0.2"}, "outside"),
    ({"first": "x", "last": "192.168.122.12"}, "not an IPv4 address"),
    ({"first": "192.168.122.10", "last": "192.168.122.11", "macs": "02:00:00:00:00:01"},
     "2 expected, 1 given"),
])
def test_a_bad_range_shows_an_inline_error_and_adds_nothing(site, data, error):
    before = PrivateIP.objects.count()
    url = reverse("networking:vlan_detail", args=[site.vlan.pk])
    response = site.client(site.admin).post(url, data)
    assert response.status_code == 200
    body = response.content.decode()
    assert error in body and "is-invalid" in body
    assert PrivateIP.objects.count() == before


def test_public_pool_page_adds_a_range_and_refuses_a_bad_one(site):
    admin = site.client(site.admin)
    url = reverse("networking:public_pool")
    response = admin.post(url, {"first": "198.51.100.1", "last": "198.51.100.4"}, follow=True)
    assert "Added 4 public address(es)" in response.content.decode()
    response = admin.post(url, {"first": "127.0.0.1", "last": "127.0.0.2"})
    assert "cannot be a public address" in response.content.decode()
    assert PublicIP.objects.count() == 4
    assert "No NAT box is configured" in admin.get(url).content.decode()


def test_nat_resync_button_queues_an_operation(site, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = site.client(site.admin).post(reverse("networking:nat_resync"), follow=True)
    assert "Re-applying every NAT mapping" in response.content.decode()
    assert Operation.objects.get().kind == OperationKind.NAT_RESYNC


def test_vm_page_shows_the_network_and_offers_changes(site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    f.make_public_pool(1)
    vm, _ = install(site, django_capture_on_commit_callbacks, public_ip=True)
    body = site.client(site.admin).get(reverse("vms:vm_status", args=[vm.pk])).content.decode()
    assert "Research" in body and "campus (VLAN 10)" in body
    assert "203.0.113.10" in body and f">{vm.vnc_port}<" in body
    assert reverse("vms:vm_change_network", args=[vm.pk]) in body
    assert reverse("vms:vm_change_public_ip", args=[vm.pk]) not in body  # it has one
    assert 'data-action="public_ip_release"' in body


def test_a_move_is_asked_for_through_the_form(site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install
    from vms.models import VMRequest

    vm, _ = install(site, django_capture_on_commit_callbacks)
    VirtualMachine.objects.filter(pk=vm.pk).update(owner=site.student)
    client = site.client(site.student)
    url = reverse("vms:vm_change_network", args=[vm.pk])
    form = client.get(url).content.decode()
    assert f'<option value="{site.domain2.pk}"' in form
    assert f'<option value="{site.domain.pk}"' not in form
    response = client.post(url, {"security_domain": site.domain2.pk, "purpose": "lab work",
                                 "faculty": site.faculty.pk}, follow=True)
    req = VMRequest.objects.get(target=vm)
    assert req.kind == "network" and req.stage == "faculty"
    assert "Move lab1 to security domain Private" in response.content.decode()
    page = client.get(reverse("vms:vm_status", args=[vm.pk])).content.decode()
    assert "Waiting for approval" in page
    again = client.post(reverse("vms:vm_change_public_ip", args=[vm.pk]),
                        {"purpose": "x", "faculty": site.faculty.pk}, follow=True)
    assert "already waits for approval" in again.content.decode()


def test_a_change_form_shows_inline_errors(site, django_capture_on_commit_callbacks):
    from tests.vms.test_lifecycle import install

    vm, _ = install(site, django_capture_on_commit_callbacks)
    response = site.client(site.admin).post(
        reverse("vms:vm_change_network", args=[vm.pk]), {"security_domain": site.domain2.pk})
    assert response.status_code == 200 and "is-invalid" in response.content.decode()

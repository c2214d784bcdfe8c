"""The admin's pool pages: use, filters, range forms with inline errors."""

from __future__ import annotations

import pytest
from django.urls import reverse

from networking.models import PrivateIP, PublicIP
from tests import factories as f
from vms.models import Operation, OperationKind

pytestmark = pytest.mark.django_db


def test_overview_shows_vlans_domains_and_public_use(site):
    f.make_public_pool(3)
    body = site.client(site.admin).get(reverse("networking:overview")).content.decode()
    assert "campus" in body and "Research" in body and "Computer Science" in body
    assert "0 of 5 taken" in body and "0 <span" in body


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

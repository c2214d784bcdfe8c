"""Every form of the portal shows its fields one way: marks, errors in place of help, examples."""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.urls import reverse

from networking.forms import example_range

pytestmark = pytest.mark.django_db


def field_block(body: str, name: str) -> str:
    start = body.index(f'id="div_id_{name}"')
    end = body.find('id="div_id_', start + 1)
    return body[start:end if end != -1 else len(body)]


def test_the_ssh_key_form_marks_the_key_required_and_puts_its_error_in_place_of_help(site):
    client = site.client(site.student)
    page = client.get(reverse("accounts:ssh_key_list")).content.decode()
    key = field_block(page, "public_key")
    assert "(required)" in key and re.search(r"<textarea[^>]*\brequired\b", key)
    assert "(required)" not in field_block(page, "name")
    help_text = "One line from your .pub file"
    assert page.count(help_text) == 1
    bad = client.post(reverse("accounts:ssh_key_list"), {"name": "k", "public_key": ""})
    block = field_block(bad.content.decode(), "public_key")
    assert "This field is required." in block and help_text not in block
    assert "invalid-feedback d-block" in block


def test_the_person_form_uses_the_shared_field_template(site):
    page = site.client(site.admin).get(
        reverse("accounts:person_detail", args=[site.student.pk])).content.decode()
    role = field_block(page, "role")
    assert "(required)" in role and "form-select" in role
    assert "form-check-input" in field_block(page, "is_active")


def test_the_organisation_form_marks_its_name_required(site):
    page = site.client(site.admin).get(reverse("accounts:organisation_list")).content.decode()
    assert "(required)" in field_block(page, "name")


@pytest.mark.parametrize("which", ["vlan", "vlan2"])
def test_the_add_addresses_example_lies_inside_the_vlans_subnet_after_its_pool(site, which):
    vlan = getattr(site, which)
    page = site.client(site.admin).get(
        reverse("networking:vlan_detail", args=[vlan.pk])).content.decode()
    first = re.search(r'name="first"[^>]*placeholder="([^"]+)"|placeholder="([^"]+)"[^>]*'
                      r'name="first"', page)
    shown = [g for g in first.groups() if g][0]
    subnet = ipaddress.IPv4Network(vlan.subnet)
    highest = max(ipaddress.IPv4Address(a) for a in
                  vlan.addresses.values_list("address", flat=True))
    assert ipaddress.IPv4Address(shown) in subnet
    assert ipaddress.IPv4Address(shown) == highest + 1
    assert "(required)" in field_block(page, "first")


def test_the_example_of_an_empty_or_full_small_vlan_stays_inside_it(site):
    from tests import factories as f

    empty = f.VLANFactory(name="small", tag=30, subnet="10.30.0.0/28")
    first, last = example_range(empty)
    assert (first, last) == ("10.30.0.8", "10.30.0.14")
    f.make_pool(empty, 6, start=8)  # .8 to .13
    first, last = example_range(empty)
    assert (first, last) == ("10.30.0.14", "10.30.0.14")


def test_the_public_pool_example_is_a_documentation_range(site):
    page = site.client(site.admin).get(reverse("networking:public_pool")).content.decode()
    assert 'placeholder="203.0.113.20"' in page and "192.168.10." not in page

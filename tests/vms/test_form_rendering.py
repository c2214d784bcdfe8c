"""The request and change forms: every error in one round, bounded inputs, marks and help."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.portal.test_rules import make_vm
from vms.models import VMRequest

pytestmark = pytest.mark.django_db


def field_block(body: str, name: str) -> str:
    """Return the HTML the shared field template made for one field."""
    start = body.index(f'id="div_id_{name}"')
    end = body.find('id="div_id_', start + 1)
    return body[start:end if end != -1 else len(body)]


def test_a_size_out_of_bounds_shows_with_every_other_error_in_one_round(site):
    response = site.client(site.student).post(reverse("vms:request_create"), {
        "name": "", "template": site.template.pk, "vcpus": 9, "memory_mib": 100000,
        "disk_gib": 2, "purpose": "", "security_domain": site.domain.pk})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert set(errors) >= {"name", "vcpus", "memory_mib", "purpose", "faculty"}
    assert errors["vcpus"] == ["Choose between 1 and 4 vCPUs for Debian."]
    assert errors["memory_mib"] == ["Choose between 256 and 4096 MiB for Debian."]
    assert "disk_gib" not in errors
    body = response.content.decode()
    assert "Choose between 1 and 4 vCPUs" in field_block(body, "vcpus")
    assert not VMRequest.objects.exists()


def test_a_taken_name_shows_with_the_other_errors(site):
    make_vm(site, name="taken")
    response = site.client(site.student).post(reverse("vms:request_create"), {
        "name": "taken", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
        "disk_gib": 99, "purpose": "x", "security_domain": site.domain.pk,
        "faculty": site.faculty.pk})
    errors = response.context["form"].errors
    assert errors["name"] == ["A VM or pending request already has this name."]
    assert errors["disk_gib"] == ["Choose between 1 and 20 GiB for Debian."]


def test_a_word_where_a_number_belongs_is_said_once(site):
    response = site.client(site.student).post(reverse("vms:request_create"), {
        "name": "ok-name", "template": site.template.pk, "vcpus": "many", "memory_mib": 512,
        "disk_gib": 2, "purpose": "x", "security_domain": site.domain.pk,
        "faculty": site.faculty.pk})
    assert response.context["form"].errors["vcpus"] == ["Enter a whole number."]


def test_size_inputs_carry_the_templates_bounds_for_the_browser_and_its_script(site):
    body = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    vcpus = re.search(r'<input type="number" name="vcpus"[^>]*>', body).group(0)
    assert 'min="1"' in vcpus and 'max="4"' in vcpus and 'step="1"' in vcpus
    memory = re.search(r'<input type="number" name="memory_mib"[^>]*>', body).group(0)
    assert 'min="256"' in memory and 'max="4096"' in memory
    disk = re.search(r'<input type="number" name="disk_gib"[^>]*>', body).group(0)
    assert 'min="1"' in disk and 'max="20"' in disk
    assert (f'id="template-size-bounds" type="application/json">{{"{site.template.pk}": '
            '{"vcpus": [1, 4], "memory_mib": [256, 4096], "disk_gib": [1, 20]}}') in body
    assert "portal/size-bounds.js" in body


def test_the_site_limit_caps_the_inputs_as_it_caps_the_check(site, settings):
    settings.PORTAL = {**settings.PORTAL, "MAX_VCPUS": 2}
    body = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    vcpus = re.search(r'<input type="number" name="vcpus"[^>]*>', body).group(0)
    assert 'max="2"' in vcpus


def test_required_fields_are_marked_and_optional_ones_are_not(site):
    body = site.client(site.student).get(reverse("vms:request_create")).content.decode()
    assert "Fields marked" in body
    for name in ("name", "vcpus", "purpose"):
        block = field_block(body, name)
        assert "(required)" in block and 'aria-hidden="true">*</span>' in block
        assert re.search(r"<(input|textarea)[^>]*\brequired\b", block), name
    public_ip = field_block(body, "public_ip")
    assert "(required)" not in public_ip and " required" not in public_ip


def test_help_text_shows_once_and_an_error_takes_its_place(site):
    client = site.client(site.student)
    fresh = client.get(reverse("vms:request_create")).content.decode()
    help_text = "Lower-case letters, digits and hyphens, starting with a letter."
    assert fresh.count(help_text) == 1
    bad = client.post(reverse("vms:request_create"), {
        "name": "Bad_Name", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
        "disk_gib": 2, "purpose": "x", "security_domain": site.domain.pk,
        "faculty": site.faculty.pk}).content.decode()
    block = field_block(bad, "name")
    assert "Use 1 to 63 lower-case letters" in block
    assert help_text not in block
    assert bad.count("Use 1 to 63 lower-case letters") == 2  # the summary, and the field


def test_a_resize_shows_bounds_and_the_missing_reason_in_one_round(site):
    vm = make_vm(site)
    client = site.client(site.student)
    url = reverse("vms:vm_change_resize", args=[vm.pk])
    page = client.get(url).content.decode()
    vcpus = re.search(r'<input type="number" name="vcpus"[^>]*>', page).group(0)
    assert 'min="1"' in vcpus and 'max="4"' in vcpus and 'step="1"' in vcpus
    assert "(required)" in field_block(page, "purpose")
    response = client.post(url, {"vcpus": 64, "memory_mib": 99999, "purpose": "",
                                 "faculty": site.faculty.pk})
    errors = response.context["form"].errors
    assert errors["vcpus"] == ["Choose between 1 and 4 vCPUs for Debian."]
    assert errors["memory_mib"] == ["Choose between 256 and 4096 MiB for Debian."]
    assert "purpose" in errors
    assert not VMRequest.objects.filter(target=vm).exists()


def test_one_bad_size_of_a_resize_does_not_hide_the_other(site):
    vm = make_vm(site)
    response = site.client(site.student).post(
        reverse("vms:vm_change_resize", args=[vm.pk]),
        {"vcpus": "x", "memory_mib": 99999, "purpose": "more room", "faculty": site.faculty.pk})
    errors = response.context["form"].errors
    assert errors["vcpus"] == ["Enter a whole number."]
    assert errors["memory_mib"] == ["Choose between 256 and 4096 MiB for Debian."]


@pytest.mark.parametrize(("url", "field", "value", "bound", "error"), [
    ("vms:vm_change_disk", "size_gib", 999, 'max="200"', "Choose between 1 and 200 GiB."),
    ("vms:vm_change_clone", "count", 9, 'max="5"', "Ask for 1 to 5 copies."),
])
def test_disk_and_clone_forms_are_bounded_and_checked_with_the_other_fields(
        site, url, field, value, bound, error):
    vm = make_vm(site)
    client = site.client(site.student)
    page = client.get(reverse(url, args=[vm.pk])).content.decode()
    assert bound in re.search(rf'<input type="number" name="{field}"[^>]*>', page).group(0)
    response = client.post(reverse(url, args=[vm.pk]), {field: value, "purpose": ""})
    errors = response.context["form"].errors
    assert errors[field] == [error]
    assert "purpose" in errors and "faculty" in errors

"""Datastore paths and template image names: under the configured roots, plain, refused clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from hosts.models import Datastore, Template
from hosts.virt.images import datastore_path_problem, image_name_problem

ROOTS = ("/srv/portal", "/var/lib/libvirt/images")


@pytest.mark.parametrize(("path", "words"), [
    ("/etc", "datastore roots"),
    ("/proc", "datastore roots"),
    ("//etc", "normal form"),
    ("//srv/portal/a", "normal form"),
    ("/srv/portal/a\n/etc", "control characters"),
    ("/srv/portal/a\t", "control characters"),
    ("/srv/portal/a\u2028b", "control characters"),
    ("srv/portal/a", "absolute"),
    ("/srv/portal/a/", "normal form"),
    ("/srv/portal/./a", "normal form"),
    ("/srv/portal/../../etc", "normal form"),
    ("/srv/portal-evil", "datastore roots"),
    ("/srv", "datastore roots"),
    ("", "Give the datastore"),
])
def test_datastore_paths_outside_the_roots_or_odd_are_refused(path, words):
    problem = datastore_path_problem(path, ROOTS)
    assert problem is not None and words in problem, problem


@pytest.mark.parametrize("path", ["/srv/portal", "/srv/portal/lab", "/var/lib/libvirt/images",
                                  "/var/lib/libvirt/images/fast/ssd-1"])
def test_datastore_paths_under_a_root_are_accepted(path):
    assert datastore_path_problem(path, ROOTS) is None


def test_no_roots_configured_refuses_every_path():
    assert "PORTAL_DATASTORE_ROOTS" in datastore_path_problem("/srv/portal/a", ())


def test_a_symlink_in_a_root_is_refused_even_when_it_points_inside(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "inside").symlink_to(root / "real")
    (root / "to-etc").symlink_to("/etc")
    roots = (str(root),)
    assert datastore_path_problem(str(root / "real"), roots) is None
    assert "symbolic link" in datastore_path_problem(str(root / "inside"), roots)
    assert "symbolic link" in datastore_path_problem(str(root / "to-etc"), roots)


def test_a_path_through_a_symlinked_folder_that_leaves_the_roots_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    problem = datastore_path_problem(str(root / "escape" / "ssl"), (str(root),))
    assert problem is not None and "/etc/ssl" in problem and "outside" in problem


def test_a_file_is_not_a_datastore(tmp_path):
    (tmp_path / "disk.qcow2").write_bytes(b"")
    problem = datastore_path_problem(str(tmp_path / "disk.qcow2"), (str(tmp_path),))
    assert "not a directory" in problem


@pytest.mark.parametrize(("name", "words"), [
    ("base\n.qcow2", "control characters"),
    ("images/", "no slash"),
    ("../base.qcow2", "no slash"),
    ("/etc/shadow", "no slash"),
    (".hidden.qcow2", "lower-case letter"),
    ("..", "lower-case letter"),
    ("Debian 12.qcow2", "lower-case letter"),
    ("", "Give the image"),
])
def test_template_image_names_that_are_not_plain_file_names_are_refused(name, words):
    problem = image_name_problem(name)
    assert problem is not None and words in problem, problem


def test_plain_image_names_are_accepted():
    assert image_name_problem("debian-12_v2.qcow2") is None


@pytest.mark.django_db
def test_full_clean_refuses_a_datastore_outside_the_roots_so_services_do_too():
    store = Datastore(name="evil", path="/etc")
    with pytest.raises(ValidationError) as caught:
        store.full_clean()
    assert "datastore roots" in " ".join(caught.value.message_dict["path"])
    Datastore(name="lab", path="/srv/portal/lab").full_clean()


@pytest.mark.django_db
def test_full_clean_refuses_an_image_name_with_a_newline(site):
    site.template.image = "base.qcow2\n"
    with pytest.raises(ValidationError) as caught:
        site.template.full_clean()
    assert "image" in caught.value.message_dict


def test_the_settings_roots_cover_the_demo_datastore(settings):
    assert str(settings.VAR_DIR / "datastore") in settings.PORTAL_DATASTORE_ROOTS
    assert "/var/lib/libvirt/images" in settings.PORTAL_DATASTORE_ROOTS


# --- Django admin -----------------------------------------------------------------------------


def _datastore_form(site, path: str) -> dict:
    return {"name": "extra", "path": path, "capacity_gib": "0", "hosts": [site.host.pk]}


@pytest.mark.parametrize(("path", "words"), [
    ("/etc", "datastore roots"),
    ("/proc", "datastore roots"),
    ("//etc", "normal form"),
    ("/srv/portal/a\n/etc", "control characters"),
])
def test_django_admin_refuses_a_bad_datastore_path_with_a_form_error(site, path, words):
    admin = site.client(site.admin)
    page = admin.post(reverse("admin:hosts_datastore_add"), _datastore_form(site, path))
    assert page.status_code == 200
    assert words in page.context["adminform"].form.errors["path"][0]
    assert not Datastore.objects.filter(name="extra").exists()


def test_django_admin_refuses_a_datastore_that_is_a_symlink_to_etc(site, tmp_path, settings):
    settings.PORTAL_DATASTORE_ROOTS = (str(tmp_path),)
    (tmp_path / "etc").symlink_to("/etc")
    admin = site.client(site.admin)
    page = admin.post(reverse("admin:hosts_datastore_add"),
                      _datastore_form(site, str(tmp_path / "etc")))
    assert page.status_code == 200
    assert "symbolic link" in page.context["adminform"].form.errors["path"][0]
    assert not Datastore.objects.filter(name="extra").exists()


def test_django_admin_accepts_a_datastore_under_a_root(site, tmp_path, settings):
    settings.PORTAL_DATASTORE_ROOTS = (str(tmp_path),)
    (tmp_path / "lab").mkdir()
    page = site.client(site.admin).post(reverse("admin:hosts_datastore_add"),
                                        _datastore_form(site, str(tmp_path / "lab")))
    assert page.status_code == 302, page.content.decode()[:2000]
    assert Datastore.objects.get(name="extra").path == str(tmp_path / "lab")


def _template_form(site, image: str) -> dict:
    t = site.template
    return {"name": "Extra", "datastore": t.datastore.pk, "image": image, "os_name": "",
            "min_vcpus": 1, "max_vcpus": 2, "min_memory_mib": 256, "max_memory_mib": 1024,
            "min_disk_gib": 1, "max_disk_gib": 10, "cloud_init": "on", "is_active": "on"}


@pytest.mark.parametrize("image", ["base\n.qcow2", "images/", "../base.qcow2", ".base.qcow2"])
def test_django_admin_refuses_a_template_image_that_is_not_a_plain_file_name(site, image):
    page = site.client(site.admin).post(reverse("admin:hosts_template_add"),
                                        _template_form(site, image))
    assert page.status_code == 200
    assert page.context["adminform"].form.errors["image"]
    assert not Template.objects.filter(name="Extra").exists()


def test_django_admin_accepts_a_plain_template_image_name(site):
    page = site.client(site.admin).post(reverse("admin:hosts_template_add"),
                                        _template_form(site, "debian-12.qcow2"))
    assert page.status_code == 302, page.content.decode()[:2000]
    assert Template.objects.get(name="Extra").image == "debian-12.qcow2"


def test_the_test_settings_cover_the_tiers_temporary_datastores(settings):
    assert datastore_path_problem(os.path.realpath("/var/tmp/portaltest-x"),
                                  settings.PORTAL_DATASTORE_ROOTS) is None
    assert datastore_path_problem(str(Path("/srv/portal/local")),
                                  settings.PORTAL_DATASTORE_ROOTS) is None

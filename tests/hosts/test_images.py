"""Image inspection (OSSA-2024-001) with a scripted host: what is refused and how it reads.

The same checks run against real qemu-img images in tests/integration/test_images_qemu.py.
"""

from __future__ import annotations

import json

import pytest

from core.errors import PortalError
from hosts.images import disk_image_check, host_runner, template_image_check
from hosts.virt import VirtError
from hosts.virt.images import (
    ImageMissing,
    ImageRefused,
    image_check,
    parse_qemu_img_info,
    run_local,
)

STORE = "/srv/portal/local"


def info(*, fmt="qcow2", backing=None, data_file=None, encrypted=False) -> str:
    data = {"compat": "1.1", "corrupt": False}
    if data_file:
        data.update({"data-file": data_file, "data-file-raw": True})
    if encrypted:
        data["encrypt"] = {"format": "luks"}
    out = {"virtual-size": 1 << 30, "filename": "x", "format": fmt,
           "format-specific": {"type": fmt, "data": data}}
    if backing:
        out.update({"backing-filename": backing, "full-backing-filename": backing,
                    "backing-filename-format": "qcow2"})
    if encrypted:
        out["encrypted"] = True
    return json.dumps(out)


class ScriptedHost:
    """Answer realpath and qemu-img info as a host with these files would; record each argv."""

    def __init__(self, links: dict[str, str] | None = None,
                 images: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.links = {STORE: STORE, **(links or {})}
        self.images = images or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[:3] == ["realpath", "-e", "--"]:
            real = self.links.get(argv[3])
            return (0, real + "\n", "") if real else (1, "", "No such file or directory")
        assert argv[:5] == ["qemu-img", "info", "-f", "qcow2", "--output=json"], argv
        assert argv[5] == "--"
        return self.images[argv[6]]


def host_with(name: str, answer: tuple[int, str, str], real: str | None = None) -> ScriptedHost:
    path = f"{STORE}/{name}"
    real = real or path
    return ScriptedHost(links={path: real}, images={real: answer})


def test_a_standalone_qcow2_inside_its_datastore_passes_and_is_read_with_its_format():
    host = host_with("base.qcow2", (0, info(), ""))
    found = image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)
    assert (found.format, found.backing, found.data_file, found.encrypted) == (
        "qcow2", None, None, False)
    # An explicit format, JSON, and the end of options before the path: never probed.
    assert ["qemu-img", "info", "-f", "qcow2", "--output=json", "--",
            f"{STORE}/base.qcow2"] in host.calls


def test_an_external_data_file_is_refused_naming_it():
    host = host_with("base.qcow2", (0, info(data_file="/etc/shadow"), ""))
    with pytest.raises(ImageRefused, match=r"refers to a data file outside the image "
                                           r"\(/etc/shadow\)"):
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)


def test_a_template_with_any_backing_file_is_refused():
    host = host_with("base.qcow2", (0, info(backing=f"{STORE}/other.qcow2"), ""))
    with pytest.raises(ImageRefused, match="has a backing file"):
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)


def test_an_overlay_must_be_backed_by_exactly_the_expected_image():
    host = host_with("vm.qcow2", (0, info(backing="/etc/passwd"), ""))
    with pytest.raises(ImageRefused, match="backed by /etc/passwd, not by"):
        image_check(f"{STORE}/vm.qcow2", datastore=STORE, run=host,
                    backing=f"{STORE}/base.qcow2")
    good = host_with("vm.qcow2", (0, info(backing=f"{STORE}/base.qcow2"), ""))
    image_check(f"{STORE}/vm.qcow2", datastore=STORE, run=good, backing=f"{STORE}/base.qcow2")


def test_an_encrypted_image_is_refused():
    host = host_with("base.qcow2", (0, info(encrypted=True), ""))
    with pytest.raises(ImageRefused, match="is encrypted"):
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)


def test_an_image_of_another_format_is_refused_without_probing_it():
    host = host_with("base.qcow2", (1, "", "qemu-img: Could not open 'x': Image is not in "
                                          "qcow2 format\n"))
    with pytest.raises(ImageRefused, match="is not a qcow2 image"):
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)


def test_a_symlink_leading_out_of_the_datastore_is_refused_before_qemu_img_reads_it():
    host = host_with("base.qcow2", (0, info(), ""), real="/var/lib/secret/disk.qcow2")
    with pytest.raises(ImageRefused, match="link to /var/lib/secret/disk.qcow2, outside"):
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)
    assert not any(argv[0] == "qemu-img" for argv in host.calls)


def test_a_path_outside_the_datastore_or_odd_is_refused_before_anything_runs():
    host = ScriptedHost()
    for path in ("/etc/shadow", f"{STORE}/../x.qcow2", f"{STORE}/a\n.qcow2", STORE):
        with pytest.raises(ImageRefused):
            image_check(path, datastore=STORE, run=host)
    assert host.calls == []


def test_a_missing_image_is_reported_as_missing():
    with pytest.raises(ImageMissing, match="not in the datastore"):
        image_check(f"{STORE}/gone.qcow2", datastore=STORE, run=ScriptedHost())


def test_a_qemu_img_that_fails_otherwise_is_a_hypervisor_error_not_a_refusal():
    host = host_with("base.qcow2", (1, "", "qemu-img: Failed to get shared \"write\" lock\n"))
    with pytest.raises(VirtError) as caught:
        image_check(f"{STORE}/base.qcow2", datastore=STORE, run=host)
    assert not isinstance(caught.value, ImageRefused)
    assert "write" in str(caught.value)


def test_a_vm_disk_may_be_backed_by_a_clean_image_of_its_datastore_only():
    vm, base = f"{STORE}/vm.qcow2", f"{STORE}/demo-old.qcow2"
    clean = ScriptedHost(links={vm: vm, base: base},
                         images={vm: (0, info(backing=base), ""), base: (0, info(), "")})
    image_check(vm, datastore=STORE, run=clean, any_backing_inside=True)
    outside = ScriptedHost(links={vm: vm}, images={vm: (0, info(backing="/etc/x.qcow2"), "")})
    with pytest.raises(ImageRefused, match="outside its datastore"):
        image_check(vm, datastore=STORE, run=outside, any_backing_inside=True)
    dirty = ScriptedHost(links={vm: vm, base: base},
                         images={vm: (0, info(backing=base), ""),
                                 base: (0, info(data_file="/dev/sda"), "")})
    with pytest.raises(ImageRefused, match="data file"):
        image_check(vm, datastore=STORE, run=dirty, any_backing_inside=True)


def test_qemu_img_output_that_is_not_json_is_an_error():
    with pytest.raises(VirtError, match="cannot read the image"):
        parse_qemu_img_info("/x", "Image is fine")


def test_run_local_has_a_timeout_and_reports_a_missing_program():
    assert run_local(["true"]) == (0, "", "")
    with pytest.raises(VirtError, match="did not answer within"):
        run_local(["sleep", "5"], timeout=0.1)
    with pytest.raises(VirtError, match="cannot run"):
        run_local(["/nonexistent/qemu-img"])


# --- which host runs the inspection -----------------------------------------------------------


@pytest.mark.django_db
def test_local_qemu_hosts_are_inspected_here_remote_ones_over_ssh_test_driver_not_at_all():
    from hosts.models import Host

    assert host_runner(Host(name="a", uri="qemu:///system")) is run_local
    assert host_runner(Host(name="b", uri="qemu+ssh://root@kvm1/system",
                            address="kvm1")) is not None
    assert host_runner(Host(name="c", uri="qemu+ssh://root@kvm1/system")) is None
    assert host_runner(Host(name="d", uri="test:///default")) is None


@pytest.mark.django_db
def test_a_remote_host_without_an_ssh_address_cannot_use_templates(site):
    site.host.uri, site.host.address = "qemu+tcp://kvm9/system", ""
    with pytest.raises(PortalError, match="no SSH address"):
        template_image_check(template=site.template, host=site.host)


@pytest.mark.django_db
def test_a_refused_template_reads_clearly_for_owner_and_admin(site, monkeypatch):
    import hosts.images as images_module

    host = host_with("base.qcow2", (0, info(data_file="/etc/shadow"), ""))
    site.host.uri = "qemu:///system"
    site.datastore.path = STORE
    monkeypatch.setattr(images_module, "run_local", host)
    with pytest.raises(PortalError) as caught:
        template_image_check(template=site.template, host=site.host)
    assert str(caught.value).startswith(
        "The template image base.qcow2 of “Debian” is refused: base.qcow2 refers to a data "
        "file outside the image (/etc/shadow)")
    assert "Nothing was created" in str(caught.value)


@pytest.mark.django_db
def test_a_vm_disk_with_a_data_file_is_not_copied(site, monkeypatch):
    import hosts.images as images_module

    host = host_with("vm-1.qcow2", (0, info(data_file="/etc/shadow"), ""))
    site.host.uri = "qemu:///system"
    monkeypatch.setattr(images_module, "run_local", host)
    with pytest.raises(PortalError, match="The disk of lab1 is refused: .*data file"):
        disk_image_check(datastore=site.datastore, volume="vm-1.qcow2", host=site.host,
                         owner="lab1")

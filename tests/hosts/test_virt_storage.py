"""Fast tests of the libvirt adapter's storage pools and volumes against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/conftest.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hosts.virt import Hypervisor, ImageFacts, NotFound, VirtError, get_connection
from tests.hosts.virt_helpers import (
    BASE,
    GIB,
    POOL,
    POOL_PATH,
    VIR_ERR_NO_STORAGE_POOL,
    VIR_ERR_NO_STORAGE_VOL,
    forbid_libvirt,
)

# -- storage name validation ---------------------------------------------------------------


BAD_VOLUME_NAMES = ["", "Disk.qcow2", "../disk.qcow2", "a/b.qcow2", ".hidden", "d" * 64, "a b"]


@pytest.mark.parametrize("name", BAD_VOLUME_NAMES)
@pytest.mark.parametrize(
    "call",
    [
        lambda hv, v: hv.create_overlay(POOL, v, BASE, GIB),
        lambda hv, v: hv.delete_volume(POOL, v),
        lambda hv, v: hv.volume_exists(POOL, v),
        lambda hv, v: hv.inspect_image(POOL, v),
    ],
    ids=["create_overlay", "delete_volume", "volume_exists", "inspect_image"],
)
def test_volume_methods_refuse_bad_volume_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, name: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid volume name"):
        call(hv, name)


@pytest.mark.parametrize("name", ["", "Pool", "a/b", "../x", "p" * 64])
@pytest.mark.parametrize(
    "call",
    [
        lambda hv, p: hv.ensure_pool(p, POOL_PATH),
        lambda hv, p: hv.create_overlay(p, "disk.qcow2", BASE, GIB),
        lambda hv, p: hv.delete_volume(p, "disk.qcow2"),
        lambda hv, p: hv.list_volumes(p),
    ],
    ids=["ensure_pool", "create_overlay", "delete_volume", "list_volumes"],
)
def test_storage_methods_refuse_bad_pool_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, name: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid pool name"):
        call(hv, name)


@pytest.mark.parametrize("path", ["", "relative/dir", "/srv/../etc", "/srv//x", "/srv/x/", "/a\nb"])
def test_ensure_pool_refuses_a_bad_path_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid pool path"):
        hv.ensure_pool(POOL, path)


@pytest.mark.parametrize(
    ("backing", "capacity", "fmt", "message"),
    [
        ("base.qcow2", GIB, "qcow2", "invalid backing path"),
        ("/srv/../etc/shadow", GIB, "qcow2", "invalid backing path"),
        (BASE, 0, "qcow2", "invalid capacity"),
        (BASE, -1, "qcow2", "invalid capacity"),
        (BASE, True, "qcow2", "invalid capacity"),
        (BASE, "1G", "qcow2", "invalid capacity"),
        (BASE, GIB, "vmdk", "invalid backing format"),
    ],
)
def test_create_overlay_refuses_bad_arguments_without_calling_libvirt(
    hv: Hypervisor,
    monkeypatch: pytest.MonkeyPatch,
    backing: str,
    capacity: object,
    fmt: str,
    message: str,
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match=message):
        hv.create_overlay(POOL, "disk.qcow2", backing, capacity, backing_format=fmt)


# -- storage ---------------------------------------------------------------------------------


def test_ensure_pool_defines_starts_and_autostarts_a_dir_pool(
    hv: Hypervisor, uri: str, pool: str
) -> None:
    handle = get_connection(uri).storagePoolLookupByName(pool)
    assert handle.isActive()
    assert handle.autostart()
    root = ET.fromstring(handle.XMLDesc(0))
    assert root.get("type") == "dir"
    assert root.findtext("target/path") == POOL_PATH


def test_ensure_pool_is_idempotent(hv: Hypervisor, uri: str, pool: str) -> None:
    hv.ensure_pool(POOL, POOL_PATH)
    assert [p.name() for p in get_connection(uri).listAllStoragePools(0)] == [POOL]


def test_ensure_pool_starts_an_inactive_pool(hv: Hypervisor, uri: str, pool: str) -> None:
    handle = get_connection(uri).storagePoolLookupByName(pool)
    handle.destroy()
    hv.ensure_pool(POOL, POOL_PATH)
    assert handle.isActive()


def test_ensure_pool_refuses_an_existing_pool_at_another_path(hv: Hypervisor, pool: str) -> None:
    with pytest.raises(VirtError, match="points at '/srv/portal/main', not '/srv/other'"):
        hv.ensure_pool(POOL, "/srv/other")


def test_create_overlay_makes_a_qcow2_volume_backed_by_the_base(hv: Hypervisor, pool: str) -> None:
    path = hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB)
    assert path == f"{POOL_PATH}/web1-disk.qcow2"
    assert hv.inspect_image(pool, "web1-disk.qcow2") == ImageFacts(
        path=path, format="qcow2", capacity_bytes=10 * GIB, backing_path=BASE
    )


def test_create_overlay_returns_the_existing_volume_with_the_same_backing(
    hv: Hypervisor, pool: str
) -> None:
    first = hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB)
    assert hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB) == first
    assert hv.list_volumes(pool) == ["web1-disk.qcow2"]


def test_create_overlay_refuses_an_existing_volume_with_another_backing(
    hv: Hypervisor, pool: str
) -> None:
    hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB)
    with pytest.raises(VirtError, match="already exists with backing"):
        hv.create_overlay(pool, "web1-disk.qcow2", "/srv/portal/main/other.qcow2", 10 * GIB)
    assert hv.inspect_image(pool, "web1-disk.qcow2").backing_path == BASE


def test_create_overlay_in_a_missing_pool_raises_not_found(hv: Hypervisor) -> None:
    with pytest.raises(
        NotFound, match="cannot create volume 'web1-disk.qcow2' in pool 'nopool' on test://"
    ) as caught:
        hv.create_overlay("nopool", "web1-disk.qcow2", BASE, GIB)
    assert caught.value.code == VIR_ERR_NO_STORAGE_POOL


def test_volume_exists_and_list_volumes_follow_creation_and_deletion(
    hv: Hypervisor, pool: str
) -> None:
    assert not hv.volume_exists(pool, "b.qcow2")
    hv.create_overlay(pool, "b.qcow2", BASE, GIB)
    hv.create_overlay(pool, "a.qcow2", BASE, GIB)
    assert hv.volume_exists(pool, "b.qcow2")
    assert hv.list_volumes(pool) == ["a.qcow2", "b.qcow2"]
    hv.delete_volume(pool, "b.qcow2")
    assert not hv.volume_exists(pool, "b.qcow2")
    assert hv.list_volumes(pool) == ["a.qcow2"]


def test_delete_volume_is_a_no_op_for_a_missing_volume(hv: Hypervisor, pool: str) -> None:
    hv.create_overlay(pool, "web1-disk.qcow2", BASE, GIB)
    hv.delete_volume(pool, "web1-disk.qcow2")
    hv.delete_volume(pool, "web1-disk.qcow2")
    assert hv.list_volumes(pool) == []


def test_delete_volume_in_a_missing_pool_raises_not_found(hv: Hypervisor) -> None:
    with pytest.raises(NotFound, match="cannot delete volume 'web1-disk.qcow2' from pool 'nopool'"):
        hv.delete_volume("nopool", "web1-disk.qcow2")


def test_inspect_image_of_a_missing_volume_raises_not_found(hv: Hypervisor, pool: str) -> None:
    with pytest.raises(NotFound, match="volume 'ghost.qcow2' in pool 'portal-main'") as caught:
        hv.inspect_image(pool, "ghost.qcow2")
    assert caught.value.code == VIR_ERR_NO_STORAGE_VOL


def test_create_volume_makes_a_standalone_qcow2_once(hv: Hypervisor) -> None:
    hv.ensure_pool("disks", "/srv/disks")
    path = hv.create_volume("disks", "extra.qcow2", 3 * GIB)
    assert hv.create_volume("disks", "extra.qcow2", 3 * GIB) == path
    facts = hv.inspect_image("disks", "extra.qcow2")
    assert (facts.format, facts.capacity_bytes, facts.backing_path) == ("qcow2", 3 * GIB, None)
    with pytest.raises(VirtError):
        hv.create_volume("disks", "../escape.qcow2", GIB)

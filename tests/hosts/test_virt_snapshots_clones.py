"""Fast tests of snapshots and clones against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/conftest.py).
The test driver keeps snapshots and clones volumes (copying the XML, not data).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hosts.virt import Hypervisor, NotFound, VirtError, get_connection
from tests.hosts.virt_helpers import (
    BASE,
    GIB,
    POOL,
    POOL_PATH,
    VIR_ERR_NO_DOMAIN,
    VIR_ERR_NO_DOMAIN_SNAPSHOT,
    VIR_ERR_NO_STORAGE_VOL,
    forbid_libvirt,
)

# -- snapshots -------------------------------------------------------------------------------


def test_snapshot_create_of_a_shut_off_domain_is_listed(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1", "before the upgrade")
    assert hv.snapshot_names(web1) == ["snap-1"]


def test_snapshot_create_of_a_running_domain_keeps_it_running(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.snapshot_create(web1, "snap-1")
    assert hv.snapshot_names(web1) == ["snap-1"]
    assert hv.domain(web1).state == "running"


def test_snapshot_create_is_idempotent(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1", "first")
    hv.snapshot_create(web1, "snap-1", "retried")
    assert hv.snapshot_names(web1) == ["snap-1"]


def test_snapshot_description_stays_escaped_text(hv: Hypervisor, uri: str, web1: str) -> None:
    text = "</description><evil/> & 'quotes' <name>other</name>"
    hv.snapshot_create(web1, "snap-1", text)
    dom = get_connection(uri).lookupByName(web1)
    root = ET.fromstring(dom.snapshotLookupByName("snap-1").getXMLDesc(0))
    assert root.findtext("description") == text
    assert root.findtext("name") == "snap-1"
    assert root.find("evil") is None
    assert root.find("description/evil") is None


def test_snapshot_names_are_sorted(hv: Hypervisor, web1: str) -> None:
    for name in ("snap-b", "snap-c", "snap-a"):
        hv.snapshot_create(web1, name)
    assert hv.snapshot_names(web1) == ["snap-a", "snap-b", "snap-c"]


def test_snapshot_revert_returns_the_state_the_snapshot_had(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "off")
    hv.start(web1)
    hv.snapshot_create(web1, "on")
    assert hv.snapshot_revert(web1, "off") == "shutoff"
    assert hv.domain(web1).state == "shutoff"
    assert hv.snapshot_revert(web1, "on") == "running"
    assert hv.domain(web1).state == "running"


def test_snapshot_revert_to_a_missing_snapshot_raises_not_found(
    hv: Hypervisor, uri: str, web1: str
) -> None:
    with pytest.raises(NotFound) as caught:
        hv.snapshot_revert(web1, "nope")
    assert caught.value.code == VIR_ERR_NO_DOMAIN_SNAPSHOT
    assert f"cannot revert domain 'web1' to snapshot 'nope' on {uri}" in str(caught.value)


def test_snapshot_delete_removes_it_and_is_idempotent(hv: Hypervisor, web1: str) -> None:
    hv.snapshot_create(web1, "snap-1")
    hv.snapshot_create(web1, "snap-2")
    hv.snapshot_delete(web1, "snap-1")
    hv.snapshot_delete(web1, "snap-1")
    hv.snapshot_delete(web1, "never-taken")
    assert hv.snapshot_names(web1) == ["snap-2"]


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (lambda hv: hv.snapshot_create("ghost", "snap-1"), "create snapshot 'snap-1' of"),
        (lambda hv: hv.snapshot_revert("ghost", "snap-1"), "revert"),
        (lambda hv: hv.snapshot_delete("ghost", "snap-1"), "delete snapshot 'snap-1' of"),
        (lambda hv: hv.snapshot_names("ghost"), "list snapshots of"),
    ],
    ids=["create", "revert", "delete", "names"],
)
def test_snapshot_methods_on_a_missing_domain_raise_not_found(
    hv: Hypervisor, uri: str, call, action: str
) -> None:
    with pytest.raises(NotFound) as caught:
        call(hv)
    assert caught.value.code == VIR_ERR_NO_DOMAIN
    assert f"cannot {action} domain 'ghost' on {uri}" in str(caught.value)


BAD_SNAPSHOT_NAMES = ["", "Snap", "1snap", "snap_1", "snap.1", "snap 1", "../x", "s" * 64, None]


@pytest.mark.parametrize("name", BAD_SNAPSHOT_NAMES)
@pytest.mark.parametrize(
    "call",
    [
        lambda hv, n: hv.snapshot_create("web1", n),
        lambda hv, n: hv.snapshot_revert("web1", n),
        lambda hv, n: hv.snapshot_delete("web1", n),
    ],
    ids=["create", "revert", "delete"],
)
def test_snapshot_methods_refuse_bad_snapshot_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, name: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid snapshot name") as caught:
        call(hv, name)
    assert caught.value.code is None


@pytest.mark.parametrize("description", ["bell\x07", "nul\x00", 42, None])
def test_snapshot_create_refuses_descriptions_xml_cannot_hold_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, description: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid snapshot description"):
        hv.snapshot_create("web1", "snap-1", description)


# -- clones ----------------------------------------------------------------------------------


def test_clone_volume_copies_an_overlay_into_a_volume_without_backing(
    hv: Hypervisor, pool: str
) -> None:
    hv.create_overlay(pool, "web1-disk.qcow2", BASE, 10 * GIB)
    path = hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")
    assert path == f"{POOL_PATH}/web2-disk.qcow2"
    facts = hv.inspect_image(pool, "web2-disk.qcow2")
    assert (facts.path, facts.format, facts.backing_path) == (path, "qcow2", None)
    assert facts.capacity_bytes == 10 * GIB
    assert hv.inspect_image(pool, "web1-disk.qcow2").backing_path == BASE


def test_clone_volume_is_idempotent(hv: Hypervisor, pool: str) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    first = hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")
    assert hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2") == first
    assert hv.list_volumes(pool) == ["web1-disk.qcow2", "web2-disk.qcow2"]


# Cloning into another pool is proven in the hypervisor tier: the test driver looks the
# source volume up in the target pool and so cannot do it.


def test_clone_volume_refuses_an_existing_target_with_a_backing_file(
    hv: Hypervisor, pool: str
) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    hv.create_overlay(pool, "web2-disk.qcow2", BASE, GIB)
    with pytest.raises(VirtError, match="already exists as qcow2 with backing"):
        hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2")


def test_clone_volume_of_a_missing_source_raises_not_found(
    hv: Hypervisor, uri: str, pool: str
) -> None:
    with pytest.raises(NotFound) as caught:
        hv.clone_volume(pool, "ghost.qcow2", "web2-disk.qcow2")
    assert caught.value.code == VIR_ERR_NO_STORAGE_VOL
    assert (
        f"cannot clone volume 'ghost.qcow2' in pool '{POOL}' to volume 'web2-disk.qcow2' "
        f"in pool '{POOL}' on {uri}: no such volume"
    ) in str(caught.value)
    assert hv.list_volumes(pool) == []


def test_clone_volume_into_a_missing_pool_raises_not_found(hv: Hypervisor, pool: str) -> None:
    hv.create_volume(pool, "web1-disk.qcow2", GIB)
    with pytest.raises(NotFound, match="cannot clone volume 'web1-disk.qcow2' into pool 'nopool'"):
        hv.clone_volume(pool, "web1-disk.qcow2", "web2-disk.qcow2", target_pool="nopool")


def test_clone_volume_refuses_to_clone_onto_itself(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="cannot be cloned onto itself"):
        hv.clone_volume(POOL, "web1-disk.qcow2", "web1-disk.qcow2")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda hv: hv.clone_volume("Pool", "a.qcow2", "b.qcow2"), "invalid pool name"),
        (lambda hv: hv.clone_volume(POOL, "../a", "b.qcow2"), "invalid volume name"),
        (lambda hv: hv.clone_volume(POOL, "a.qcow2", "b/c"), "invalid volume name"),
        (
            lambda hv: hv.clone_volume(POOL, "a.qcow2", "b.qcow2", target_pool="x/y"),
            "invalid pool name",
        ),
    ],
    ids=["pool", "source", "new", "target_pool"],
)
def test_clone_volume_refuses_bad_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, call, message: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match=message):
        call(hv)

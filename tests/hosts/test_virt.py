"""Fast tests of the libvirt adapter against libvirt's in-process test driver.

Each test gets its own host: a node file written to tmp_path and opened as
`test:///<tmp_path>/node.xml`. Reopening `test:///default` after `close_all()` does give fresh
state (see test_close_all_gives_fresh_test_default_state), but only once every handle on it is
gone; a domain handle kept alive by the traceback of an earlier failure would leak one test's
domains into the next. A private node file per test cannot leak.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import hosts.virt.base as virt_base
from hosts.virt import (
    DomainFacts,
    HostFacts,
    Hypervisor,
    ImageFacts,
    NotFound,
    VirtError,
    close_all,
    get_connection,
    is_remote,
)

# libvirt error codes, spelled out because only hosts.virt may import libvirt.
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_NO_STORAGE_POOL = 49
VIR_ERR_NO_STORAGE_VOL = 50
VIR_ERR_NO_NETWORK = 43

POOL = "portal-main"
POOL_PATH = "/srv/portal/main"
BASE = "/srv/portal/main/debian-12.qcow2"
GIB = 1024**3


def write_node_file(path: Path) -> str:
    """Write a test-driver host with 4 CPUs and 2 GiB and return its URI."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", "2000"), ("model", "x86_64"), ("active", "4"), ("nodes", "1"),
        ("sockets", "1"), ("cores", "4"), ("threads", "1"),
    ):  # fmt: skip
        ET.SubElement(cpu, tag).text = value
    ET.SubElement(node, "memory").text = str(2 * 1024 * 1024)  # KiB
    path.write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{path}"


@pytest.fixture
def uri(tmp_path: Path):
    close_all()
    yield write_node_file(tmp_path / "node.xml")
    close_all()


@pytest.fixture
def hv(uri: str) -> Hypervisor:
    return Hypervisor(uri)


def domain_xml(name: str = "web1", memory_mib: int = 128, vcpus: int = 2) -> str:
    root = ET.Element("domain", type="test")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(root, "vcpu").text = str(vcpus)
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    return ET.tostring(root, encoding="unicode")


@pytest.fixture
def web1(hv: Hypervisor) -> str:
    hv.define_domain(domain_xml("web1"))
    return "web1"


def define_network(uri: str, name: str) -> None:
    """Define an inactive network directly, as an administrator would."""
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    get_connection(uri).networkDefineXML(ET.tostring(root, encoding="unicode"))


# -- host facts and connections ------------------------------------------------------------


def test_facts_describe_the_test_driver_host(hv: Hypervisor) -> None:
    facts = hv.facts()
    assert isinstance(facts, HostFacts)
    assert facts.accel == "test"
    assert facts.cpus == 4
    assert facts.memory_mib == 2048
    assert facts.hostname
    assert facts.hypervisor.startswith("TEST ")
    assert facts.libvirt_version.count(".") == 2
    assert all(part.isdigit() for part in facts.libvirt_version.split("."))


def test_get_connection_reuses_one_connection_per_uri(uri: str) -> None:
    assert get_connection(uri) is get_connection(uri)


def test_close_all_makes_the_next_call_open_a_new_connection(uri: str) -> None:
    first = get_connection(uri)
    close_all()
    second = get_connection(uri)
    assert second is not first
    assert second.isAlive()


def test_a_closed_cached_connection_is_reopened(uri: str) -> None:
    first = get_connection(uri)
    first.close()
    second = get_connection(uri)
    assert second is not first
    assert second.isAlive()


def test_close_all_gives_fresh_test_default_state() -> None:
    close_all()
    hv = Hypervisor("test:///default")
    try:
        assert hv.domain("test").state == "running"
        hv.destroy("test")
        assert hv.domain("test").state == "shutoff"
        close_all()
        assert hv.domain("test").state == "running"
    finally:
        close_all()


def test_unreachable_uri_raises_virt_error_naming_it(tmp_path: Path) -> None:
    uri = f"test://{tmp_path}/missing.xml"
    with pytest.raises(VirtError, match=f"cannot connect to .*{re.escape(uri)}"):
        get_connection(uri)


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("qemu:///system", False),
        ("qemu+unix:///system", False),
        ("test:///default", False),
        ("qemu+ssh://root@kvm1.example.org/system", True),
        ("qemu+tcp://kvm2/system", True),
        ("qemu://kvm3/system", True),
    ],
)
def test_is_remote_recognises_network_transports(uri: str, remote: bool) -> None:
    assert is_remote(uri) is remote


def test_libvirt_errors_are_not_printed_to_stderr(
    hv: Hypervisor, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NotFound):
        hv.start("ghost")
    assert capfd.readouterr().err == ""


# -- reading domains -------------------------------------------------------------------------


def test_define_domain_returns_a_shut_off_persistent_domain(hv: Hypervisor) -> None:
    facts = hv.define_domain(domain_xml("web1", memory_mib=256, vcpus=3))
    assert isinstance(facts, DomainFacts)
    assert (facts.name, facts.state, facts.vcpus, facts.memory_mib) == ("web1", "shutoff", 3, 256)
    assert len(facts.uuid) == 36
    assert hv.domain("web1") == facts


def test_define_domain_twice_updates_the_same_domain(hv: Hypervisor) -> None:
    first = hv.define_domain(domain_xml("web1", memory_mib=128))
    root = ET.fromstring(domain_xml("web1", memory_mib=512))
    ET.SubElement(root, "uuid").text = first.uuid
    second = hv.define_domain(ET.tostring(root, encoding="unicode"))
    assert second.uuid == first.uuid
    assert second.memory_mib == 512
    assert [d.name for d in hv.list_domains()] == ["web1"]


def test_list_domains_returns_all_domains_sorted_by_name(hv: Hypervisor) -> None:
    for name in ("zeta", "alpha", "mid"):
        hv.define_domain(domain_xml(name))
    assert [d.name for d in hv.list_domains()] == ["alpha", "mid", "zeta"]


def test_find_domain_returns_none_for_a_missing_domain(hv: Hypervisor) -> None:
    assert hv.find_domain("ghost") is None


def test_domain_raises_not_found_naming_domain_and_host(hv: Hypervisor, uri: str) -> None:
    with pytest.raises(NotFound) as caught:
        hv.domain("ghost")
    assert "domain 'ghost'" in caught.value.message
    assert uri in caught.value.message
    assert caught.value.code == VIR_ERR_NO_DOMAIN


def test_operations_on_a_missing_domain_raise_not_found_naming_the_action(
    hv: Hypervisor, uri: str
) -> None:
    with pytest.raises(NotFound, match=f"cannot start domain 'ghost' on {uri}: "):
        hv.start("ghost")


def test_domain_xml_includes_the_vnc_password_only_when_secure(hv: Hypervisor) -> None:
    root = ET.fromstring(domain_xml("web1"))
    ET.SubElement(ET.SubElement(root, "devices"), "graphics", type="vnc", passwd="s3cret")
    hv.define_domain(ET.tostring(root, encoding="unicode"))
    assert "s3cret" not in hv.domain_xml("web1")
    assert "passwd='s3cret'" in hv.domain_xml("web1", secure=True)


def test_define_domain_refuses_unparsable_xml_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid domain XML"):
        hv.define_domain("<domain><name>web1</name")
    with pytest.raises(VirtError, match="not <domain>"):
        hv.define_domain("<network><name>web1</name></network>")
    with pytest.raises(VirtError, match="invalid domain name"):
        hv.define_domain(domain_xml("Web_1"))


# -- domain lifecycle ------------------------------------------------------------------------


def test_start_runs_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    assert hv.start(web1).state == "running"
    assert hv.domain(web1).state == "running"


def test_start_is_a_no_op_on_a_running_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.start(web1).state == "running"


def test_start_resumes_a_paused_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.suspend(web1)
    assert hv.start(web1).state == "running"


def test_shutdown_turns_a_running_domain_off(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.shutdown(web1).state == "shutoff"


def test_shutdown_with_timeout_waits_for_shutoff(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.shutdown(web1, timeout=5).state == "shutoff"


def test_shutdown_is_a_no_op_on_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    assert hv.shutdown(web1).state == "shutoff"
    assert hv.shutdown(web1, timeout=1).state == "shutoff"


def test_shutdown_refuses_a_paused_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.suspend(web1)
    with pytest.raises(VirtError, match="cannot shut down domain 'web1' .*paused.*Force off"):
        hv.shutdown(web1)
    assert hv.domain(web1).state == "paused"


def test_get_connection_gives_concurrent_callers_one_connection(uri: str) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        conns = list(pool.map(lambda _: get_connection(uri), range(32)))
    assert len({id(conn) for conn in conns}) == 1


def test_destroy_forces_a_running_domain_off(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.destroy(web1).state == "shutoff"


def test_destroy_forces_a_paused_domain_off(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.suspend(web1)
    assert hv.destroy(web1).state == "shutoff"


def test_destroy_is_a_no_op_on_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    assert hv.destroy(web1).state == "shutoff"
    assert hv.destroy(web1).state == "shutoff"


def test_reboot_keeps_a_running_domain_running(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.reboot(web1).state == "running"


@pytest.mark.parametrize(("pause", "state"), [(False, "shutoff"), (True, "paused")])
def test_reboot_refuses_a_domain_that_is_not_running(
    hv: Hypervisor, web1: str, pause: bool, state: str
) -> None:
    if pause:
        hv.start(web1)
        hv.suspend(web1)
    with pytest.raises(VirtError, match=f"cannot reboot domain 'web1' .*it is {state}"):
        hv.reboot(web1)
    assert hv.domain(web1).state == state


def test_suspend_pauses_a_running_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.suspend(web1).state == "paused"


def test_suspend_is_a_no_op_on_a_paused_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.suspend(web1)
    assert hv.suspend(web1).state == "paused"


def test_suspend_refuses_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    with pytest.raises(VirtError, match="cannot suspend domain 'web1' .*shut off"):
        hv.suspend(web1)


def test_resume_runs_a_paused_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.suspend(web1)
    assert hv.resume(web1).state == "running"


def test_resume_is_a_no_op_on_a_running_domain(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    assert hv.resume(web1).state == "running"


def test_resume_refuses_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    with pytest.raises(VirtError, match="cannot resume domain 'web1' .*shut off"):
        hv.resume(web1)


def test_undefine_domain_removes_a_shut_off_domain(hv: Hypervisor, web1: str) -> None:
    hv.undefine_domain(web1)
    assert hv.find_domain(web1) is None


def test_undefine_domain_forces_a_running_domain_off_first(hv: Hypervisor, web1: str) -> None:
    hv.start(web1)
    hv.undefine_domain(web1)
    assert hv.find_domain(web1) is None


def test_undefine_domain_is_a_no_op_for_a_missing_domain(hv: Hypervisor, web1: str) -> None:
    hv.undefine_domain(web1)
    hv.undefine_domain(web1)
    hv.undefine_domain("never-existed")
    assert hv.list_domains() == []


# -- name validation -------------------------------------------------------------------------


def forbid_libvirt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach libvirt fail the test."""

    def refuse(uri: str) -> None:
        raise AssertionError(f"libvirt was called for {uri}")

    monkeypatch.setattr(virt_base, "get_connection", refuse)


BAD_DOMAIN_NAMES = [
    "", "Web1", "1web", "-web", "web_1", "web.1", "web 1", "web/1", "../etc", "w" * 64,
    "web1\n", "wéb", None, 7,
]  # fmt: skip
DOMAIN_METHODS = [
    "domain", "find_domain", "domain_xml", "start", "shutdown", "destroy", "reboot",
    "suspend", "resume", "undefine_domain",
]  # fmt: skip


@pytest.mark.parametrize("method", DOMAIN_METHODS)
@pytest.mark.parametrize("name", BAD_DOMAIN_NAMES)
def test_domain_methods_refuse_bad_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, method: str, name: object
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid domain name") as caught:
        getattr(hv, method)(name)
    assert caught.value.code is None


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


@pytest.mark.parametrize("name", ["", "Default", "net/1", "n" * 64])
def test_ensure_network_active_refuses_bad_names_without_calling_libvirt(
    hv: Hypervisor, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    forbid_libvirt(monkeypatch)
    with pytest.raises(VirtError, match="invalid network name"):
        hv.ensure_network_active(name)


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


@pytest.fixture
def pool(hv: Hypervisor, uri: str) -> str:
    hv.ensure_pool(POOL, POOL_PATH)
    return POOL


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


# -- networks --------------------------------------------------------------------------------


def test_ensure_network_active_starts_and_autostarts_an_inactive_network(
    hv: Hypervisor, uri: str
) -> None:
    define_network(uri, "isolated")
    hv.ensure_network_active("isolated")
    net = get_connection(uri).networkLookupByName("isolated")
    assert net.isActive()
    assert net.autostart()


def test_ensure_network_active_is_a_no_op_on_an_active_network(hv: Hypervisor, uri: str) -> None:
    define_network(uri, "isolated")
    hv.ensure_network_active("isolated")
    hv.ensure_network_active("isolated")
    assert get_connection(uri).networkLookupByName("isolated").isActive()


def test_ensure_network_active_raises_not_found_for_a_missing_network(
    hv: Hypervisor,
) -> None:
    with pytest.raises(NotFound, match="network 'ghost'") as caught:
        hv.ensure_network_active("ghost")
    assert caught.value.code == VIR_ERR_NO_NETWORK


def test_create_volume_makes_a_standalone_qcow2_once(hv: Hypervisor) -> None:
    hv.ensure_pool("disks", "/srv/disks")
    path = hv.create_volume("disks", "extra.qcow2", 3 * GIB)
    assert hv.create_volume("disks", "extra.qcow2", 3 * GIB) == path
    facts = hv.inspect_image("disks", "extra.qcow2")
    assert (facts.format, facts.capacity_bytes, facts.backing_path) == ("qcow2", 3 * GIB, None)
    with pytest.raises(VirtError):
        hv.create_volume("disks", "../escape.qcow2", GIB)


def test_vnc_ports_in_use_skips_a_domain_that_goes_away_while_listed(
    hv: Hypervisor, uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ET.fromstring(domain_xml("keeper"))  # noqa: S314
    ET.SubElement(ET.SubElement(root, "devices"), "graphics", type="vnc", port="5931",
                  autoport="no")
    hv.define_domain(ET.tostring(root, encoding="unicode"))
    conn = get_connection(uri)
    libvirt = virt_base.libvirt

    class Gone:
        def XMLDesc(self, _flags: int) -> str:  # noqa: N802 - libvirt's name
            exc = libvirt.libvirtError("Domain not found: no domain with matching name")
            exc.err = (VIR_ERR_NO_DOMAIN, 0, "", 0, "", "", "", 0, 0)
            raise exc

    class Listing:
        def listAllDomains(self, flags: int) -> list:  # noqa: N802 - libvirt's name
            return [Gone(), *conn.listAllDomains(flags)]

    monkeypatch.setattr(virt_base, "get_connection", lambda _uri: Listing())
    assert hv.vnc_ports_in_use() == {5931}

"""Fast tests of the libvirt adapter's connections and domains against libvirt's test driver.

Each test gets its own host from a node file under tmp_path (see tests/hosts/conftest.py).
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
    NotFound,
    VirtError,
    close_all,
    get_connection,
    is_remote,
)
from tests.hosts.virt_helpers import (
    BAD_DOMAIN_NAMES,
    VIR_ERR_NO_DOMAIN,
    domain_xml,
    forbid_libvirt,
)

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


def test_get_connection_gives_concurrent_callers_one_connection(uri: str) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        conns = list(pool.map(lambda _: get_connection(uri), range(32)))
    assert len({id(conn) for conn in conns}) == 1


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


# -- VNC ports -------------------------------------------------------------------------------


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

"""Fast tests of the host probe: the fallback chain against the errors real hosts give.

A fake connection stands for a qemu:///system host. It answers with the domain capabilities of
a nested AMD EPYC machine (tests/hosts/domcaps_epyc_nested.xml), refuses chosen
(acceleration, CPU mode) pairs with the error text qemu really prints there, and hands every
other probe guest to libvirt's test driver, which defines and runs it for real.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import hosts.virt.base as virt_base
import hosts.virt.probe as probe_module
from hosts.virt import Hypervisor, ProbeAttempt, VirtError, get_connection
from hosts.virt.domain_xml import build_probe_xml
from hosts.virt.probe import kvm_cpu_modes, trim_reason

libvirt = probe_module.libvirt  # only hosts.virt imports libvirt
DOMCAPS = (Path(__file__).parent / "domcaps_epyc_nested.xml").read_text()
CAPABILITIES = ("<capabilities><host><cpu><arch>x86_64</arch><model>EPYC</model>"
                "<vendor>AMD</vendor></cpu></host></capabilities>")
URI = "qemu+fake:///system"

# What qemu 7.2 under libvirt 9.0 says on the nested EPYC host for host-passthrough/host-model.
MSR_ABORT = (
    "internal error: qemu unexpectedly closed the monitor: 2026-11-29T16:50:41.709670Z "
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
    "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion "
    "`ret == cpu->kvm_msr_buf->nmsrs' failed."
)
# libvirt on a machine without /dev/kvm (no module, or a container without the device).
NO_KVM = ("unsupported configuration: KVM is not supported by '/usr/bin/qemu-system-x86_64' "
          "on this host")
# /dev/kvm present but only root may open it, while qemu runs as libvirt-qemu.
KVM_ROOT_ONLY = ("internal error: process exited while connecting to monitor: "
                 "Could not access KVM kernel module: Permission denied\n"
                 "qemu-system-x86_64: failed to initialize kvm: Permission denied")


def libvirt_error(message: str, code: int = 1) -> Exception:
    exc = libvirt.libvirtError(message)
    exc.err = (code, 10, message, 2, None, None, None, -1, -1)
    return exc


def shape(domain_type: str, cpu_mode: str) -> str:
    return build_probe_xml(domain_type=domain_type, cpu_mode=cpu_mode)


def cpu_mode_of(root: ET.Element) -> str:
    cpu = root.find("cpu")
    if cpu is None:
        return ""
    if cpu.get("mode") == "custom":
        return f"custom:{cpu.findtext('model')}"
    return cpu.get("mode", "")


class FakeQemuHost:
    """A qemu:///system stand-in whose guests run on libvirt's test driver."""

    def __init__(self, test_uri: str, *, refuse: dict[tuple[str, str], str] | None = None,
                 dies: tuple[tuple[str, str], ...] = (), kvm_error: str | None = None,
                 domcaps: str = DOMCAPS, pauses: tuple[tuple[str, str], ...] = ()) -> None:
        self.pauses = pauses
        self.real = get_connection(test_uri)
        self.refuse = refuse or {}
        self.dies = dies
        self.kvm_error = kvm_error
        self.domcaps = domcaps
        self.started: list[tuple[str, str]] = []
        self.xml: list[str] = []

    def getType(self) -> str:  # noqa: N802 - libvirt's name
        return "QEMU"

    def getVersion(self) -> int:  # noqa: N802
        return 7_002_022

    def getCapabilities(self) -> str:  # noqa: N802
        return CAPABILITIES

    def getDomainCapabilities(self, *args: Any) -> str:  # noqa: N802
        if self.kvm_error and args[3] == "kvm":
            raise libvirt_error(self.kvm_error)
        return self.domcaps

    def createXML(self, xml: str, flags: int) -> Any:  # noqa: N802
        root = ET.fromstring(xml)
        key = (root.get("type"), cpu_mode_of(root))
        self.started.append(key)
        self.xml.append(xml)
        if key[0] == "kvm" and self.kvm_error:
            raise libvirt_error(self.kvm_error)
        if key in self.refuse:
            raise libvirt_error(self.refuse[key])
        root.set("type", "test")  # the test driver runs only its own domain type
        dom = self.real.createXML(ET.tostring(root, encoding="unicode"), 0)
        if key in self.dies:
            dom.destroy()
        if key in self.pauses:
            dom.suspend()  # what qemu does on a KVM internal error (emulation failure)
        return dom

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def test_uri(tmp_path: Path) -> str:
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (("mhz", "2000"), ("model", "x86_64"), ("active", "2"), ("nodes", "1"),
                       ("sockets", "1"), ("cores", "2"), ("threads", "1")):
        ET.SubElement(cpu, tag).text = value
    ET.SubElement(node, "memory").text = str(4 * 1024 * 1024)
    (tmp_path / "node.xml").write_text(ET.tostring(node, encoding="unicode"))
    return f"test://{tmp_path / 'node.xml'}"


@pytest.fixture
def fake_host(test_uri: str, monkeypatch: pytest.MonkeyPatch):
    """Return a function that installs a FakeQemuHost for URI and returns it."""
    monkeypatch.setattr(probe_module, "SETTLE_S", 0)

    def install(**kwargs: Any) -> FakeQemuHost:
        fake = FakeQemuHost(test_uri, **kwargs)
        real_get = virt_base.get_connection
        monkeypatch.setattr(virt_base, "get_connection",
                            lambda uri: fake if uri == URI else real_get(uri))
        return fake

    return install


EPYC_NESTED = {("kvm", "host-passthrough"): MSR_ABORT, ("kvm", "host-model"): MSR_ABORT}


def test_nested_epyc_falls_back_past_the_msr_abort_to_a_named_model(fake_host) -> None:
    fake = fake_host(refuse=EPYC_NESTED)
    report = Hypervisor(URI).probe(shape)
    assert (report.accel, report.cpu_mode, report.pinned) == ("kvm", "custom:qemu64", False)
    assert fake.started == [("kvm", "host-passthrough"), ("kvm", "host-model"),
                            ("kvm", "custom:qemu64")]
    msr = ("internal error: qemu unexpectedly closed the monitor: qemu-system-x86_64: error: "
           "failed to set MSR 0x10a to 0x69")
    assert report.attempts == (
        ProbeAttempt("kvm", "host-passthrough", False, msr),
        ProbeAttempt("kvm", "host-model", False, msr),
        ProbeAttempt("kvm", "custom:qemu64", True, "ran"),
    )
    # Every probe guest was torn down again.
    assert fake.real.listAllDomains(0) == []


def test_the_probe_runs_exactly_the_shape_a_vm_gets(fake_host) -> None:
    fake = fake_host(refuse=EPYC_NESTED)
    Hypervisor(URI).probe(shape)
    root = ET.fromstring(fake.xml[0])
    assert (root.get("type"), root.find("cpu").attrib) == ("kvm", {"mode": "host-passthrough"})
    assert root.find("devices/disk") is None and root.find("devices/interface") is None
    assert root.find("devices/graphics").get("type") == "vnc"
    assert root.find("os/type").get("arch") == "x86_64"


def test_a_host_where_everything_runs_keeps_host_passthrough(fake_host) -> None:
    fake = fake_host()
    report = Hypervisor(URI).probe(shape)
    assert (report.accel, report.cpu_mode) == ("kvm", "host-passthrough")
    assert fake.started == [("kvm", "host-passthrough")]


def test_usable_models_of_the_host_vendor_come_before_the_generic_one(fake_host) -> None:
    domcaps = DOMCAPS.replace('usable="no" vendor="AMD">EPYC-Rome',
                              'usable="yes" vendor="AMD">EPYC-Rome')
    domcaps = domcaps.replace('usable="no" vendor="Intel">Skylake-Server',
                              'usable="yes" vendor="Intel">Skylake-Server')
    fake = fake_host(refuse={**EPYC_NESTED, ("kvm", "custom:EPYC-Rome"): MSR_ABORT},
                     domcaps=domcaps)
    report = Hypervisor(URI).probe(shape)
    # Intel's model is usable on paper but not the host's vendor; pentium3 is no x86-64 CPU.
    assert [k[1] for k in fake.started] == ["host-passthrough", "host-model", "custom:EPYC-Rome",
                                            "custom:qemu64"]
    assert report.cpu_mode == "custom:qemu64"


def test_kvm_cpu_modes_skip_what_libvirt_says_it_lacks() -> None:
    domcaps = DOMCAPS.replace('name="host-model" supported="yes"',
                              'name="host-model" supported="no"')
    assert kvm_cpu_modes(domcaps, "AMD") == [
        ("host-passthrough", ""), ("host-model", "not offered by libvirt on this host"),
        ("custom:qemu64", ""),
    ]


def test_a_guest_that_dies_after_starting_is_not_taken_for_working(fake_host) -> None:
    fake = fake_host(dies=(("kvm", "host-passthrough"),))
    report = Hypervisor(URI).probe(shape)
    assert report.attempts[0] == ProbeAttempt("kvm", "host-passthrough", False,
                                              "started, then gone within 0 s")
    assert (report.accel, report.cpu_mode) == ("kvm", "host-model")
    assert fake.started[:2] == [("kvm", "host-passthrough"), ("kvm", "host-model")]


def test_a_guest_that_kvm_stops_is_not_taken_for_working_and_tcg_follows(fake_host) -> None:
    kvm_modes = (("kvm", "host-passthrough"), ("kvm", "host-model"), ("kvm", "custom:qemu64"))
    fake_host(pauses=kvm_modes)
    report = Hypervisor(URI).probe(shape, settle_s=0)
    assert [a.reason for a in report.attempts[:3]] == [
        "started, then paused within 0 s (qemu stops a guest whose code it cannot run)"] * 3
    assert (report.accel, report.cpu_mode) == ("qemu", "")


@pytest.mark.parametrize(("kvm_error", "reason"), [
    (NO_KVM, "KVM is not offered: unsupported configuration: KVM is not supported"),
])
def test_a_host_without_kvm_gets_tcg(fake_host, kvm_error: str, reason: str) -> None:
    fake = fake_host(kvm_error=kvm_error)
    report = Hypervisor(URI).probe(shape)
    assert (report.accel, report.cpu_mode) == ("qemu", "")
    assert report.attempts[0].reason.startswith(reason)
    assert fake.started == [("qemu", "")]
    assert ET.fromstring(fake.xml[0]).find("cpu") is None


def test_a_root_only_kvm_device_falls_through_every_cpu_mode_to_tcg(fake_host) -> None:
    fake_host(refuse={k: KVM_ROOT_ONLY for k in [
        ("kvm", "host-passthrough"), ("kvm", "host-model"), ("kvm", "custom:qemu64")]})
    report = Hypervisor(URI).probe(shape)
    assert (report.accel, report.cpu_mode) == ("qemu", "")
    assert [a.ok for a in report.attempts] == [False, False, False, True]
    assert report.attempts[0].reason == ("internal error: process exited while connecting to "
                                         "monitor: Could not access KVM kernel module: "
                                         "Permission denied")


def test_when_nothing_runs_the_report_has_no_acceleration(fake_host) -> None:
    fake_host(kvm_error=NO_KVM, refuse={("qemu", ""): "internal error: no qemu binary"})
    report = Hypervisor(URI).probe(shape)
    assert (report.accel, report.cpu_mode) == ("", "")
    assert [a.reason for a in report.attempts][-1] == "internal error: no qemu binary"


def test_pins_are_used_as_given_and_the_chain_is_still_reported(fake_host) -> None:
    fake = fake_host(refuse=EPYC_NESTED)
    hv = Hypervisor(URI)
    report = hv.probe(shape, accel_pin="qemu")
    assert (report.accel, report.cpu_mode, report.pinned) == ("qemu", "", True)
    assert report.attempts[-1] == ProbeAttempt("qemu", "", True, "ran")
    assert len(report.attempts) == 4

    report = hv.probe(shape, cpu_mode_pin="host-model")
    # A pin that fails the probe is still used: the administrator knows better (or learns).
    assert (report.accel, report.cpu_mode, report.pinned) == ("kvm", "host-model", True)
    assert (report.attempts[1].cpu_mode, report.attempts[1].ok) == ("host-model", False)
    assert "failed to set MSR" in report.attempts[1].reason
    assert len(report.attempts) == 3

    report = hv.probe(shape, cpu_mode_pin="custom:EPYC")
    assert (report.accel, report.cpu_mode) == ("kvm", "custom:EPYC")
    assert report.attempts[-1] == ProbeAttempt("kvm", "custom:EPYC", True, "ran")
    assert ("kvm", "custom:EPYC") in fake.started


def test_a_host_cpu_mode_pinned_with_tcg_is_refused(fake_host) -> None:
    fake_host()
    report = Hypervisor(URI).probe(shape, accel_pin="qemu", cpu_mode_pin="host-passthrough")
    assert report.attempts[-1].ok is False
    assert "needs KVM" in report.attempts[-1].reason
    with pytest.raises(VirtError, match="invalid acceleration pin"):
        Hypervisor(URI).probe(shape, accel_pin="xen")


def test_reports_are_cached_per_uri_until_a_fresh_probe_or_other_pins(fake_host) -> None:
    fake = fake_host(refuse=EPYC_NESTED)
    hv = Hypervisor(URI)
    assert hv.facts().accel == ""  # never probed: nothing is claimed
    first = hv.probe(shape)
    assert Hypervisor(URI).probe(shape) is first
    assert len(fake.started) == 3
    facts = hv.facts()
    assert (facts.accel, facts.cpu_mode) == ("kvm", "custom:qemu64")
    assert hv.probe(shape, fresh=True) == first
    assert len(fake.started) == 6
    hv.probe(shape, accel_pin="qemu")
    assert len(fake.started) == 10


def test_the_test_driver_is_not_probed(test_uri: str) -> None:
    def never(_accel: str, _mode: str) -> str:
        raise AssertionError("the test driver runs no guests")

    report = Hypervisor(test_uri).probe(never)
    assert (report.accel, report.cpu_mode, report.attempts) == ("test", "", ())


@pytest.mark.parametrize(("text", "expected"), [
    (MSR_ABORT, "internal error: qemu unexpectedly closed the monitor: qemu-system-x86_64: "
                "error: failed to set MSR 0x10a to 0x69"),
    ("\n\n  second line first\nthird", "second line first"),
    ("", "no reason given"),
    ("x" * 300, "x" * 199 + "…"),
])
def test_reasons_keep_the_first_line_without_timestamps(text: str, expected: str) -> None:
    assert trim_reason(text) == expected

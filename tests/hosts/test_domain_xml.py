"""Fast tests of the domain XML builder and reader (pure Python plus libvirt's test driver)."""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hosts.virt import Hypervisor, close_all
from hosts.virt.domain_xml import (
    PORTAL_NS,
    DomainSpec,
    ParsedDomain,
    build_domain_xml,
    build_probe_xml,
    parse_domain_xml,
)

UUID = "0b6f6a63-2f0b-4a52-9d1c-2d3b8c5e6f70"
HOSTILE = "</description><evil/>&amp; \"quoted\" 'single' <![CDATA[x]]> ]]> & <b>"


def make_spec(**changes: object) -> DomainSpec:
    base = DomainSpec(
        name="web1",
        uuid=UUID,
        domain_type="qemu",
        vcpus=2,
        memory_mib=1024,
        disk_path="/srv/portal/main/web1-disk.qcow2",
        network="default",
        mac="52:54:00:12:34:56",
    )
    return dataclasses.replace(base, **changes)


def tree(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(build_domain_xml(spec))


# -- building --------------------------------------------------------------------------------


def test_build_then_parse_round_trips_the_portal_fields() -> None:
    spec = make_spec(vnc_port=5917, metadata={"owner": "alice", "request-id": "42"})
    assert parse_domain_xml(build_domain_xml(spec)) == ParsedDomain(
        name="web1",
        uuid=UUID,
        vcpus=2,
        memory_mib=1024,
        disk_paths=["/srv/portal/main/web1-disk.qcow2"],
        macs=["52:54:00:12:34:56"],
        vnc_port=5917,
        metadata={"owner": "alice", "request-id": "42"},
    )


def test_build_writes_the_expected_domain_skeleton() -> None:
    root = tree(make_spec())
    assert root.get("type") == "qemu"
    assert root.find("memory").attrib == {"unit": "MiB"}
    assert root.findtext("memory") == root.findtext("currentMemory") == "1024"
    assert root.findtext("vcpu") == "2"
    os_type = root.find("os/type")
    assert os_type.text == "hvm"
    assert os_type.attrib == {"arch": "x86_64"}  # no machine: libvirt picks its default
    assert root.find("os/boot").get("dev") == "hd"
    assert root.find("features/acpi") is not None
    assert root.find("features/apic") is not None
    assert root.find("clock").get("offset") == "utc"
    assert [root.findtext(t) for t in ("on_poweroff", "on_reboot", "on_crash")] == [
        "destroy", "restart", "destroy",
    ]  # fmt: skip
    assert root.find("devices/emulator") is None


def test_build_writes_a_virtio_qcow2_disk_a_network_nic_and_consoles() -> None:
    root = tree(make_spec(portgroup="vlan10"))
    disk = root.find("devices/disk")
    assert disk.attrib == {"type": "file", "device": "disk"}
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2"}
    assert disk.find("source").get("file") == "/srv/portal/main/web1-disk.qcow2"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    nic = root.find("devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").attrib == {"network": "default", "portgroup": "vlan10"}
    assert nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("model").get("type") == "virtio"
    assert root.find("devices/serial").get("type") == "pty"
    assert root.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    assert root.find("devices/video/model").get("type") == "vga"
    assert root.find("devices/memballoon").get("model") == "virtio"


def test_build_writes_a_raw_disk_when_asked() -> None:
    assert tree(make_spec(disk_format="raw")).find("devices/disk/driver").get("type") == "raw"


def test_build_omits_mac_and_portgroup_when_not_given() -> None:
    nic = tree(make_spec(mac="", portgroup=None)).find("devices/interface")
    assert nic.find("mac") is None
    assert nic.find("source").attrib == {"network": "default"}


def test_build_lowercases_the_mac_address() -> None:
    nic = tree(make_spec(mac="52:54:00:AB:CD:EF")).find("devices/interface")
    assert nic.find("mac").get("address") == "52:54:00:ab:cd:ef"


def test_build_writes_no_cpu_element_unless_given_a_cpu_mode() -> None:
    # qemu's default model: what a host that was never probed can run, under KVM or TCG.
    for domain_type in ("kvm", "qemu", "test"):
        assert tree(make_spec(domain_type=domain_type)).find("cpu") is None


@pytest.mark.parametrize("mode", ["host-passthrough", "host-model"])
def test_build_writes_the_host_cpu_modes_as_given(mode: str) -> None:
    cpu = tree(make_spec(domain_type="kvm", cpu_mode=mode)).find("cpu")
    assert (cpu.attrib, list(cpu)) == ({"mode": mode}, [])


@pytest.mark.parametrize("domain_type", ["kvm", "qemu"])
def test_build_writes_a_named_model_that_qemu_may_trim_but_not_replace(domain_type: str) -> None:
    cpu = tree(make_spec(domain_type=domain_type, cpu_mode="custom:EPYC-Rome")).find("cpu")
    assert cpu.attrib == {"mode": "custom", "match": "exact", "check": "none"}
    model = cpu.find("model")
    assert (model.text, model.attrib) == ("EPYC-Rome", {"fallback": "forbid"})


def test_probe_xml_has_the_shape_of_a_vm_without_disk_or_network() -> None:
    vm = tree(make_spec(domain_type="kvm", cpu_mode="host-model"))
    probe = ET.fromstring(build_probe_xml(domain_type="kvm", cpu_mode="host-model"))
    assert probe.get("type") == "kvm"
    assert probe.findtext("name").startswith("portal-probe-")
    assert probe.findtext("memory") == "64"
    for path in ("os/type", "cpu", "features", "clock"):
        assert ET.tostring(probe.find(path)) == ET.tostring(vm.find(path)), path
    vm_devices = [d.tag for d in vm.find("devices") if d.tag not in ("disk", "interface")]
    assert [d.tag for d in probe.find("devices")] == vm_devices
    graphics = probe.find("devices/graphics")
    assert graphics.attrib == {"type": "vnc"}  # no port of its own: VMs' ports stay free
    assert [e.attrib for e in graphics] == [{"type": "none"}]
    assert ET.fromstring(build_probe_xml(domain_type="qemu", cpu_mode="")).find("cpu") is None


def test_build_keeps_hostile_description_as_escaped_text() -> None:
    xml = build_domain_xml(make_spec(description=HOSTILE))
    root = ET.fromstring(xml)
    assert root.findtext("description") == HOSTILE
    assert root.find(".//evil") is None
    assert root.find(".//b") is None
    assert "<evil" not in xml


def test_build_omits_description_when_empty() -> None:
    assert tree(make_spec(description="")).find("description") is None


def test_build_keeps_hostile_metadata_values_and_paths_as_data() -> None:
    path = '/srv/portal/it\'s "odd" & <dir>/disk.qcow2'
    spec = make_spec(disk_path=path, metadata={"note": HOSTILE})
    parsed = parse_domain_xml(build_domain_xml(spec))
    assert parsed.disk_paths == [path]
    assert parsed.metadata == {"note": HOSTILE}


def test_build_writes_metadata_in_the_portal_namespace() -> None:
    xml = build_domain_xml(make_spec(metadata={"owner": "alice", "vm-id": "7"}))
    root = ET.fromstring(xml)
    vm = root.find(f"metadata/{{{PORTAL_NS}}}vm")
    assert vm is not None
    assert [(child.tag, child.text) for child in vm] == [
        (f"{{{PORTAL_NS}}}owner", "alice"),
        (f"{{{PORTAL_NS}}}vm-id", "7"),
    ]
    assert f'xmlns:portal="{PORTAL_NS}"' in xml


def test_build_omits_metadata_when_empty() -> None:
    assert tree(make_spec()).find("metadata") is None


def test_build_writes_a_fixed_vnc_port_with_autoport_off() -> None:
    graphics = tree(make_spec(vnc_port=5999, vnc_listen="10.0.0.5")).find("devices/graphics")
    assert graphics.get("type") == "vnc"
    assert graphics.get("port") == "5999"
    assert graphics.get("autoport") == "no"
    assert graphics.get("listen") == "10.0.0.5"
    assert graphics.find("listen").attrib == {"type": "address", "address": "10.0.0.5"}


def test_build_asks_for_autoport_when_no_vnc_port_is_given() -> None:
    graphics = tree(make_spec(vnc_port=None)).find("devices/graphics")
    assert graphics.get("autoport") == "yes"
    assert graphics.get("port") is None
    assert graphics.get("listen") == "127.0.0.1"


def test_build_sets_the_vnc_password_only_when_given() -> None:
    assert tree(make_spec(vnc_password="s3cr&t<")).find("devices/graphics").get("passwd") == (
        "s3cr&t<"
    )
    assert tree(make_spec()).find("devices/graphics").get("passwd") is None


def test_build_normalises_the_uuid() -> None:
    assert tree(make_spec(uuid=UUID.upper())).findtext("uuid") == UUID


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Web1"}, "invalid domain name"),
        ({"name": "web_1"}, "invalid domain name"),
        ({"name": "w" * 64}, "invalid domain name"),
        ({"name": ""}, "invalid domain name"),
        ({"uuid": "not-a-uuid"}, "invalid uuid"),
        ({"uuid": ""}, "invalid uuid"),
        ({"domain_type": "xen"}, "invalid domain type"),
        ({"cpu_mode": "host"}, "invalid CPU mode"),
        ({"cpu_mode": "custom:"}, "invalid CPU model"),
        ({"cpu_mode": "custom:EPYC'/><evil"}, "invalid CPU model"),
        ({"cpu_mode": None}, "invalid CPU mode"),
        ({"cpu_mode": "host-passthrough"}, "needs KVM"),
        ({"cpu_mode": "host-model", "domain_type": "test"}, "needs KVM"),
        ({"vcpus": 0}, "invalid vcpus"),
        ({"vcpus": 257}, "invalid vcpus"),
        ({"vcpus": True}, "invalid vcpus"),
        ({"vcpus": "2"}, "invalid vcpus"),
        ({"memory_mib": 63}, "invalid memory"),
        ({"memory_mib": 512.0}, "invalid memory"),
        ({"disk_path": "web1.qcow2"}, "invalid disk path"),
        ({"disk_path": "/srv/../etc/shadow"}, "invalid disk path"),
        ({"disk_path": "/srv/a\nb"}, "invalid disk path"),
        ({"disk_format": "vmdk"}, "invalid disk format"),
        ({"network": "Bad Net"}, "invalid network name"),
        ({"mac": "52:54:00:12:34"}, "invalid MAC address"),
        ({"mac": "52-54-00-12-34-56"}, "invalid MAC address"),
        ({"mac": "zz:54:00:12:34:56"}, "invalid MAC address"),
        ({"mac": "01:00:5e:00:00:01"}, "multicast"),
        ({"portgroup": "vlan 10"}, "invalid portgroup"),
        ({"description": "bell\x07"}, r"The description contains a control character \(U\+0007\)"),
        ({"description": "nul\x00"}, r"a control character \(U\+0000\); remove it"),
        ({"description": "over\u202eride"}, r"text-direction control character \(U\+202E\)"),
        ({"description": 7}, "description must be text"),
        ({"vnc_port": 80}, "invalid VNC port"),
        ({"vnc_port": 70000}, "invalid VNC port"),
        ({"vnc_listen": "localhost"}, "invalid VNC listen address"),
        ({"vnc_listen": "127.0.0.1' evil='1"}, "invalid VNC listen address"),
        ({"vnc_password": "123456789"}, "invalid VNC password"),
        ({"vnc_password": ""}, "invalid VNC password"),
        ({"vnc_password": "with space"}, "invalid VNC password"),
        ({"metadata": {"Bad Key": "x"}}, "invalid metadata key"),
        ({"metadata": {"ns:key": "x"}}, "invalid metadata key"),
        ({"metadata": {"owner": 7}}, "metadata value"),
        ({"metadata": {"owner": "esc\x1b"}}, r"control character \(U\+001B\)"),
        ({"metadata": {"owner": "two\nlines"}}, r"line break \(U\+000A\)"),
    ],
)
def test_build_refuses_bad_input_with_value_error(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_domain_xml(make_spec(**changes))


# -- parsing ---------------------------------------------------------------------------------

LIBVIRT_STYLE = """<domain type='kvm' id='3'>
  <name>db1</name>
  <uuid>7d5e8f2a-1b3c-4d5e-8f9a-0b1c2d3e4f5a</uuid>
  <metadata>
    <portal:vm xmlns:portal="https://portal.invalid/xmlns/vm/1">
      <portal:owner>bob</portal:owner>
    </portal:vm>
    <other:thing xmlns:other="https://example.org/other"><other:x>1</other:x></other:thing>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <devices>
    <disk type='file' device='disk'><source file='/srv/a.qcow2'/><target dev='vda'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg/b'/><target dev='vdb'/></disk>
    <disk type='file' device='cdrom'><source file='/srv/install.iso'/><target dev='sda'/></disk>
    <interface type='network'><mac address='52:54:00:AA:00:01'/></interface>
    <interface type='bridge'><mac address='52:54:00:aa:00:02'/></interface>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>"""


def test_parse_reads_libvirt_output_with_kib_units_and_extra_metadata() -> None:
    parsed = parse_domain_xml(LIBVIRT_STYLE)
    assert parsed.name == "db1"
    assert parsed.uuid == "7d5e8f2a-1b3c-4d5e-8f9a-0b1c2d3e4f5a"
    assert parsed.vcpus == 4
    assert parsed.memory_mib == 2048
    assert parsed.disk_paths == ["/srv/a.qcow2", "/dev/vg/b"]
    assert parsed.macs == ["52:54:00:aa:00:01", "52:54:00:aa:00:02"]
    assert parsed.metadata == {"owner": "bob"}


def test_parse_reports_no_vnc_port_for_an_autoport_domain_that_is_off() -> None:
    assert parse_domain_xml(LIBVIRT_STYLE).vnc_port is None


def test_parse_reports_the_vnc_port_libvirt_chose_for_a_running_domain() -> None:
    running = LIBVIRT_STYLE.replace("port='-1'", "port='5903'")
    assert parse_domain_xml(running).vnc_port == 5903


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<domain><name>x</name>",
        "<network><name>x</name></network>",
        "<domain><vcpu>1</vcpu><memory>1024</memory></domain>",
        "<domain><name>x</name><memory>1024</memory></domain>",
        "<domain><name>x</name><vcpu>1</vcpu></domain>",
        "<domain><name>x</name><vcpu>1</vcpu><memory unit='parsecs'>1</memory></domain>",
    ],
)
def test_parse_refuses_xml_it_cannot_read_with_value_error(xml: str) -> None:
    with pytest.raises(ValueError):
        parse_domain_xml(xml)


# -- libvirt accepts what we build -------------------------------------------------------------


@pytest.fixture
def test_host(tmp_path: Path):
    """Return a Hypervisor on a private, empty test-driver host."""
    close_all()
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    yield Hypervisor(f"test://{node}")
    close_all()


def test_test_driver_defines_and_starts_the_built_xml(test_host: Hypervisor) -> None:
    spec = make_spec(
        domain_type="test",
        description=HOSTILE,
        vnc_port=5905,
        vnc_password="s3cret",
        portgroup="vlan10",
        metadata={"owner": "alice", "note": HOSTILE},
    )
    facts = test_host.define_domain(build_domain_xml(spec))
    assert (facts.name, facts.uuid, facts.vcpus, facts.memory_mib) == ("web1", UUID, 2, 1024)
    assert test_host.start("web1").state == "running"

    stored = test_host.domain_xml("web1", secure=True)
    parsed = parse_domain_xml(stored)
    assert parsed == ParsedDomain(
        name="web1",
        uuid=UUID,
        vcpus=2,
        memory_mib=1024,
        disk_paths=["/srv/portal/main/web1-disk.qcow2"],
        macs=["52:54:00:12:34:56"],
        vnc_port=5905,
        metadata={"owner": "alice", "note": HOSTILE},
        vnc_password="s3cret",  # read back only from XML read with VIR_DOMAIN_XML_SECURE
    )
    root = ET.fromstring(stored)
    assert root.findtext("description") == HOSTILE
    assert root.find("devices/graphics").get("passwd") == "s3cret"


def test_test_driver_accepts_an_autoport_domain_with_a_generated_mac(
    test_host: Hypervisor,
) -> None:
    name = f"vm-{uuid.uuid4().hex[:8]}"
    spec = make_spec(name=name, uuid=str(uuid.uuid4()), domain_type="test", mac="")
    test_host.define_domain(build_domain_xml(spec))
    parsed = parse_domain_xml(test_host.domain_xml(name))
    assert len(parsed.macs) == 1
    assert parsed.macs[0].count(":") == 5

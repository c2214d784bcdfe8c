"""Build and read libvirt domain XML with ElementTree; no Django, and no call to libvirt."""

from __future__ import annotations

import ipaddress
import re
import uuid as uuid_mod
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from core.validators import free_text_check

from .checks import (
    MAC_RE,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    OBJECT_NAME_RE,
    SIZE_UNITS,
    check_abs_path,
    check_domain_name,
    check_name,
    check_network_name,
)
from .errors import VirtError
from .probe import CUSTOM_PREFIX, HOST_MODEL, PASSTHROUGH

PORTAL_NS = "https://portal.invalid/xmlns/vm/1"
PORTAL_PREFIX = "portal"

METADATA_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# VNC authentication uses at most 8 characters; accepting more would be false security.
_VNC_PASSWORD_RE = re.compile(r"^[\x21-\x7e]{1,8}$")

DOMAIN_TYPES = ("kvm", "qemu", "test")
DISK_FORMATS = ("qcow2", "raw")
VNC_PORTS = range(5900, 65536)
# How the <cpu> element is written: '' leaves it out (qemu's default model), the two host
# modes copy the host's CPU, and 'custom:<model>' names one of libvirt's CPU models.
CPU_HOST_MODES = (PASSTHROUGH, HOST_MODEL)
CPU_CUSTOM_PREFIX = CUSTOM_PREFIX
CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PROBE_NAME_PREFIX = "portal-probe-"

ET.register_namespace(PORTAL_PREFIX, PORTAL_NS)


@dataclass(frozen=True)
class DomainSpec:
    """Everything the portal decides about one VM's libvirt definition."""

    name: str
    uuid: str
    domain_type: str  # 'kvm' | 'qemu' | 'test'
    vcpus: int
    memory_mib: int
    disk_path: str
    disk_format: str = "qcow2"
    network: str = "default"
    mac: str = ""  # empty lets libvirt choose
    portgroup: str | None = None
    vlan_tag: int | None = None  # tag on the interface, for Open vSwitch bridges
    description: str = ""
    vnc_port: int | None = None  # None -> autoport
    vnc_listen: str = "127.0.0.1"
    vnc_password: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    seed_path: str | None = None  # the cloud-init NoCloud seed, a read-only CD-ROM
    cpu_mode: str = ""  # see CPU_HOST_MODES; the host's probed or pinned mode


@dataclass(frozen=True)
class ParsedDomain:
    """The parts of a domain's XML the portal reads back."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    disk_paths: list[str]
    macs: list[str]
    vnc_port: int | None
    metadata: dict[str, str]
    vnc_password: str | None = None  # only in XML read with VIR_DOMAIN_XML_SECURE


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_cpu_mode(mode: object, domain_type: str | None = None) -> str:
    """Return mode if it is a CPU mode the domain type can use; raise ValueError otherwise."""
    if not isinstance(mode, str):
        raise ValueError(f"invalid CPU mode {mode!r}: give text")
    if mode.startswith(CPU_CUSTOM_PREFIX):
        if not CPU_MODEL_RE.fullmatch(mode.removeprefix(CPU_CUSTOM_PREFIX)):
            raise ValueError(f"invalid CPU model in {mode!r}: use letters, digits, '.', '_', '-'")
    elif mode and mode not in CPU_HOST_MODES:
        raise ValueError(
            f"invalid CPU mode {mode!r}: use '', {', '.join(CPU_HOST_MODES)} or "
            f"'{CPU_CUSTOM_PREFIX}<model>'"
        )
    if mode in CPU_HOST_MODES and domain_type not in (None, "kvm"):
        raise ValueError(f"CPU mode {mode} needs KVM, not domain type {domain_type!r}")
    return mode


def validate_spec(spec: DomainSpec) -> None:
    """Raise ValueError naming the first field of spec that cannot be used."""
    try:
        _validate(spec)
    except VirtError as exc:
        # The adapter's checks raise VirtError; a spec's callers expect ValueError.
        raise ValueError(str(exc)) from None


def _validate(spec: DomainSpec) -> None:
    check_domain_name(spec.name)
    try:
        uuid_mod.UUID(str(spec.uuid))
    except ValueError:
        raise ValueError(f"invalid uuid {spec.uuid!r}") from None
    if spec.domain_type not in DOMAIN_TYPES:
        raise ValueError(f"invalid domain type {spec.domain_type!r}: use one of {DOMAIN_TYPES}")
    check_cpu_mode(spec.cpu_mode, spec.domain_type)
    if not _is_int(spec.vcpus) or not 1 <= spec.vcpus <= MAX_VCPUS:
        raise ValueError(f"invalid vcpus {spec.vcpus!r}: give 1 to {MAX_VCPUS}")
    if not _is_int(spec.memory_mib) or not MIN_MEMORY_MIB <= spec.memory_mib <= MAX_MEMORY_MIB:
        raise ValueError(
            f"invalid memory {spec.memory_mib!r} MiB: give {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}"
        )
    check_abs_path("disk path", spec.disk_path)
    if spec.seed_path is not None:
        check_abs_path("seed path", spec.seed_path)
    if spec.disk_format not in DISK_FORMATS:
        raise ValueError(f"invalid disk format {spec.disk_format!r}: use one of {DISK_FORMATS}")
    check_network_name(spec.network)
    if not isinstance(spec.mac, str):
        raise ValueError(f"invalid MAC address {spec.mac!r}: give text or ''")
    if spec.mac:
        if not MAC_RE.fullmatch(spec.mac.lower()):
            raise ValueError(f"invalid MAC address {spec.mac!r}: use six hex pairs joined by ':'")
        if int(spec.mac[:2], 16) & 1:
            raise ValueError(f"invalid MAC address {spec.mac!r}: it is multicast")
    if spec.portgroup is not None:
        check_name("portgroup", spec.portgroup, OBJECT_NAME_RE)
    if spec.vlan_tag is not None and (not _is_int(spec.vlan_tag) or not 1 <= spec.vlan_tag <= 4094):
        raise ValueError(f"invalid VLAN tag {spec.vlan_tag!r}: give 1 to 4094 or None")
    # People's text: the one free-text check, so the worker says what the form would have.
    free_text_check(spec.description, what="description", multiline=True)
    if spec.vnc_port is not None and (not _is_int(spec.vnc_port) or spec.vnc_port not in VNC_PORTS):
        raise ValueError(f"invalid VNC port {spec.vnc_port!r}: give 5900 to 65535 or None")
    try:
        listen = ipaddress.ip_address(spec.vnc_listen)
    except ValueError:
        raise ValueError(f"invalid VNC listen address {spec.vnc_listen!r}") from None
    if listen.is_unspecified:
        # 0.0.0.0 or :: would show the VM's screen to anyone who reaches the host.
        raise ValueError(f"VNC must not listen on every interface ({spec.vnc_listen}); "
                         "give the host's management address")
    if spec.vnc_password is not None and (
        not isinstance(spec.vnc_password, str) or not _VNC_PASSWORD_RE.fullmatch(spec.vnc_password)
    ):
        raise ValueError("invalid VNC password: give 1 to 8 printable ASCII characters")
    if not isinstance(spec.metadata, dict):
        raise ValueError("metadata must be a dict of text")
    for key, value in spec.metadata.items():
        check_name("metadata key", key, METADATA_KEY_RE)
        free_text_check(value, what=f"metadata value of {key!r}")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrib)
    if text is not None:
        elem.text = text
    return elem


def _interface(spec: DomainSpec) -> ET.Element:
    nic = ET.Element("interface", type="network")
    if spec.mac:
        _sub(nic, "mac", address=spec.mac.lower())
    source = _sub(nic, "source", network=spec.network)
    if spec.portgroup:
        source.set("portgroup", spec.portgroup)
    if spec.vlan_tag is not None:
        _sub(_sub(nic, "vlan"), "tag", id=str(spec.vlan_tag))
    _sub(nic, "model", type="virtio")
    return nic


def build_interface_xml(spec: DomainSpec) -> str:
    """Return the XML of the spec's network interface alone, for hot-plugging."""
    validate_spec(spec)
    return ET.tostring(_interface(spec), encoding="unicode")


def _cpu(root: ET.Element, mode: str) -> None:
    if mode in CPU_HOST_MODES:
        _sub(root, "cpu", mode=mode)
    elif mode:
        # check='none': qemu drops features the host lacks instead of refusing to start.
        cpu = _sub(root, "cpu", mode="custom", match="exact", check="none")
        _sub(cpu, "model", mode.removeprefix(CPU_CUSTOM_PREFIX), fallback="forbid")


def build_probe_xml(*, domain_type: str, cpu_mode: str, boot_disk: str | None = None,
                    boot_format: str = "qcow2", memory_mib: int = MIN_MEMORY_MIB) -> str:
    """Return a throw-away domain shaped like a VM (machine, CPU, devices), with no NIC.

    With boot_disk (a template image) it boots that image read-only, as far as it gets in
    a few seconds; without, the firmware keeps looking for a disk, which runs no guest code.
    """
    spec = DomainSpec(
        name=f"{PROBE_NAME_PREFIX}{uuid_mod.uuid4().hex[:12]}", uuid=str(uuid_mod.uuid4()),
        domain_type=domain_type, cpu_mode=cpu_mode, vcpus=1, memory_mib=memory_mib,
        disk_path=boot_disk or "/dev/null", disk_format=boot_format,
        description="Probe of acceleration and CPU mode; lives seconds.",
    )
    root = ET.fromstring(build_domain_xml(spec))  # noqa: S314 - built just above
    devices = root.find("devices")
    if devices is not None:
        for elem in devices.findall("interface") + devices.findall("disk"):
            if boot_disk and elem.tag == "disk" and elem.get("device") == "disk":
                # Read-only: the template must stay as it is, and VMs share it.
                _sub(elem, "readonly")
            else:
                devices.remove(elem)
        # A VNC server that listens nowhere: the probe must not take a port a VM was given.
        for graphics in devices.iterfind("graphics"):
            kind = graphics.get("type", "vnc")
            graphics.clear()
            graphics.set("type", kind)
            _sub(graphics, "listen", type="none")
    return ET.tostring(root, encoding="unicode")


def build_domain_xml(spec: DomainSpec) -> str:
    """Return the libvirt domain XML for spec; raise ValueError on a bad spec."""
    validate_spec(spec)
    root = ET.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", str(uuid_mod.UUID(str(spec.uuid))))
    if spec.description:
        _sub(root, "description", spec.description)
    if spec.metadata:
        vm = _sub(_sub(root, "metadata"), f"{{{PORTAL_NS}}}vm")
        for key, value in spec.metadata.items():
            _sub(vm, f"{{{PORTAL_NS}}}{key}", value)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus), placement="static")

    os_el = _sub(root, "os")
    # No machine attribute: libvirt picks the host's default, which survives qemu upgrades.
    _sub(os_el, "type", "hvm", arch="x86_64")
    _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _cpu(root, spec.cpu_mode)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format)
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.seed_path is not None:
        # virtio-blk cannot carry a CD-ROM; virtio-scsi can, and unlike SATA (AHCI) it is in
        # the cloud kernels of Debian's and Ubuntu's cloud images.
        seed = _sub(devices, "disk", type="file", device="cdrom")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", file=spec.seed_path)
        _sub(seed, "target", dev="sda", bus="scsi")
        _sub(seed, "readonly")
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")

    devices.append(_interface(spec))

    _sub(_sub(devices, "serial", type="pty"), "target", port="0")
    _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")

    graphics = _sub(devices, "graphics", type="vnc", listen=spec.vnc_listen)
    if spec.vnc_port is None:
        graphics.set("autoport", "yes")
    else:
        graphics.set("port", str(spec.vnc_port))
        graphics.set("autoport", "no")
    if spec.vnc_password is not None:
        graphics.set("passwd", spec.vnc_password)
    _sub(graphics, "listen", type="address", address=spec.vnc_listen)

    _sub(_sub(devices, "video"), "model", type="vga")
    _sub(devices, "memballoon", model="virtio")
    return ET.tostring(root, encoding="unicode")


def _memory_mib(elem: ET.Element | None) -> int:
    if elem is None or not (elem.text or "").strip():
        raise ValueError("domain XML has no <memory>")
    unit = elem.get("unit", "KiB").lower()
    if unit not in SIZE_UNITS:
        raise ValueError(f"domain XML has an unknown memory unit {unit!r}")
    try:
        amount = int(elem.text.strip())
    except ValueError:
        raise ValueError(f"domain XML has a bad memory amount {elem.text!r}") from None
    return amount * SIZE_UNITS[unit] // (1024 * 1024)


def parse_domain_xml(xml: str) -> ParsedDomain:
    """Read the portal's view of a domain from its XML; raise ValueError if unreadable."""
    try:
        # libvirt's own output; ElementTree fetches no external entities and expat caps expansion.
        root = ET.fromstring(xml)  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError(f"domain XML does not parse: {exc}") from None
    if root.tag != "domain":
        raise ValueError(f"root element is <{root.tag}>, not <domain>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise ValueError("domain XML has no <name>")
    try:
        vcpus = int((root.findtext("vcpu") or "").strip())
    except ValueError:
        raise ValueError("domain XML has no valid <vcpu>") from None

    disk_paths = [
        src.get("file") or src.get("dev") or ""
        for disk in root.iterfind("devices/disk")
        if disk.get("device", "disk") == "disk"
        for src in disk.iterfind("source")
    ]
    macs = [
        mac.get("address", "").lower()
        for mac in root.iterfind("devices/interface/mac")
        if mac.get("address")
    ]
    vnc_port = vnc_password = None
    for graphics in root.iterfind("devices/graphics"):
        if graphics.get("type") == "vnc":
            vnc_password = graphics.get("passwd")
            port = graphics.get("port", "")
            # libvirt writes port='-1' for an autoport display that is not running.
            if port.isdigit() and int(port) > 0:
                vnc_port = int(port)
            break
    metadata: dict[str, str] = {}
    vm = root.find(f"metadata/{{{PORTAL_NS}}}vm")
    if vm is not None:
        for child in vm:
            key = child.tag.rpartition("}")[2]
            metadata[key] = child.text or ""
    return ParsedDomain(
        name=name,
        uuid=(root.findtext("uuid") or "").strip(),
        vcpus=vcpus,
        memory_mib=_memory_mib(root.find("memory")),
        disk_paths=[p for p in disk_paths if p],
        macs=macs,
        vnc_port=vnc_port,
        metadata=metadata,
        vnc_password=vnc_password,
    )


def retarget_domain_xml(xml: str, *, vnc_port: int | None, vnc_listen: str) -> str:
    """Return domain (or snapshot) XML with its VNC display moved to another host's port.

    Every `<graphics type="vnc">` in the document is changed, so a snapshot's saved domain
    follows its VM too; nothing else is touched.
    """
    if vnc_port is not None and vnc_port not in VNC_PORTS:
        raise VirtError(f"invalid VNC port {vnc_port!r}")
    try:
        listen = str(ipaddress.ip_address(vnc_listen))
    except ValueError as exc:
        raise VirtError(f"invalid VNC listen address {vnc_listen!r}") from exc
    try:
        root = ET.fromstring(xml)  # noqa: S314 - XML from libvirt itself
    except (ET.ParseError, TypeError) as exc:
        raise VirtError(f"invalid domain XML: {exc}") from exc
    for graphics in root.iter("graphics"):
        if graphics.get("type") != "vnc":
            continue
        if vnc_port is None:
            graphics.attrib.pop("port", None)
            graphics.set("autoport", "yes")
        else:
            graphics.set("port", str(vnc_port))
            graphics.set("autoport", "no")
        graphics.attrib.pop("websocket", None)
        graphics.set("listen", listen)
        for child in graphics.iterfind("listen"):
            if child.get("type") == "address":
                child.set("address", listen)
    return ET.tostring(root, encoding="unicode")

"""Devices of a domain: extra disks attached and detached, its interface swapped, its size changed.

Changes apply to the running domain when it allows and to its persistent definition always.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt

from .base import POLL_S, UNSUPPORTED_CODES, HypervisorBase, error_code, translate
from .checks import (
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    check_abs_path,
    check_count,
    check_disk_target,
    check_domain_name,
)
from .errors import VirtError

log = logging.getLogger(__name__)

# Inactive: the persistent definition; secure: keep the VNC password when it is redefined.
_XML_INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE

_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _disk_element(path: str, target: str, bus: str = "virtio") -> ET.Element:
    """Build the XML of a qcow2 file disk."""
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=target, bus=bus)
    return disk


def _disks(root: ET.Element) -> Iterator[tuple[ET.Element, str, str]]:
    """Yield (element, target dev, source file or '') of every disk device of a domain."""
    for disk in root.iterfind("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        path = source.get("file", "") if source is not None and disk.get("type") == "file" else ""
        yield disk, target.get("dev", "") if target is not None else "", path


def _disk_with_source(root: ET.Element, path: str) -> ET.Element | None:
    return next((disk for disk, _dev, source in _disks(root) if source == path), None)


def _set_size(root: ET.Element, tag: str, kib: int) -> None:
    elem = root.find(tag)
    if elem is None:
        elem = ET.SubElement(root, tag)
    elem.set("unit", "KiB")
    elem.text = str(kib)


class Devices(HypervisorBase):
    """The disks, interfaces and sizes of one host's domains; every method is safe to retry."""

    def replace_interface(self, name: str, old_mac: str, interface_xml: str,
                          unplug_timeout: float = 10) -> None:
        """Swap the domain's interface with old_mac for a new one, live when it runs.

        A running guest must release the old interface (ACPI hot-unplug) within
        unplug_timeout seconds; one that does not keeps its old interface and the swap fails.
        """
        check_domain_name(name)
        old_mac = old_mac.lower()
        dom = self._lookup_domain(name, "change the interface of")
        with self._doing("read", f"domain '{name}'"):
            root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))  # noqa: S314
            active = bool(dom.isActive())
        devices = root.find("devices")
        old = next((i for i in (devices.findall("interface") if devices is not None else [])
                    if (i.find("mac") is not None
                        and i.find("mac").get("address", "").lower() == old_mac)), None)
        new = ET.fromstring(interface_xml)  # noqa: S314 - built by domain_xml
        if old is None:
            # A retried move may find the new interface already in place.
            macs = [i.find("mac").get("address", "").lower()
                    for i in devices.findall("interface") if i.find("mac") is not None]
            new_mac = new.find("mac").get("address", "").lower()
            if new_mac in macs:
                return
            raise VirtError(f"cannot change the interface of domain '{name}' on {self.uri}: "
                            f"it has no interface with MAC {old_mac}")
        if not active:
            devices.remove(old)
            devices.append(new)
            with self._doing("redefine", f"domain '{name}'"):
                self._conn().defineXML(ET.tostring(root, encoding="unicode"))
            return
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
        old_xml = ET.tostring(old, encoding="unicode")
        with self._doing("detach an interface from", f"domain '{name}'"):
            dom.detachDeviceFlags(old_xml, flags)
        # Detaching is a request to the guest; wait until it lets go of the device.
        deadline = time.monotonic() + unplug_timeout
        while old_mac in dom.XMLDesc(0).lower():
            if time.monotonic() >= deadline:
                try:
                    dom.attachDeviceFlags(old_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                except libvirt.libvirtError:
                    log.exception("could not restore the interface %s of %s", old_mac, name)
                raise VirtError(
                    f"cannot change the interface of domain '{name}' on {self.uri}: the guest "
                    f"did not release it within {unplug_timeout:g} s (no hot-unplug support?); "
                    "shut the VM down and retry"
                )
            time.sleep(POLL_S)
        try:
            with self._doing("attach an interface to", f"domain '{name}'"):
                dom.attachDeviceFlags(interface_xml, flags)
        except VirtError:
            # Put the old interface back so the VM keeps its network.
            try:
                dom.attachDeviceFlags(ET.tostring(old, encoding="unicode"), flags)
            except libvirt.libvirtError:
                log.exception("could not restore the interface %s of %s", old_mac, name)
            raise

    def _read_definitions(
        self, dom: libvirt.virDomain, action: str, what: str
    ) -> tuple[ET.Element, ET.Element | None]:
        """Return the domain's persistent XML and, when it is active, its live XML."""
        with self._doing(action, what):
            active = bool(dom.isActive())
            config = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
            live = ET.fromstring(dom.XMLDesc(0)) if active else None  # noqa: S314
        return config, live

    def _redefine(self, root: ET.Element, what: str) -> None:
        with self._doing("redefine", what):
            self._conn().defineXML(ET.tostring(root, encoding="unicode"))

    def _has_disk(self, root: ET.Element, path: str, target: str, doing: str) -> bool:
        """Return whether root has path as target; raise when either is taken otherwise."""
        for _disk, dev, source in _disks(root):
            if source == path and dev == target:
                return True
            if source == path:
                raise VirtError(f"{doing}: it is already attached as {dev}")
            if dev == target:
                raise VirtError(f"{doing}: {target} already holds {source or 'another disk'}")
        return False

    def attach_disk(self, domain: str, path: str, target: str) -> str:
        """Attach a qcow2 file as an extra virtio disk; return 'live' or 'config'."""
        check_domain_name(domain)
        check_abs_path("disk path", path)
        check_disk_target(target)
        action = f"attach disk {path} as {target} to"
        what = f"domain '{domain}'"
        doing = f"cannot {action} {what} on {self.uri}"
        dom = self._lookup_domain(domain, action)
        config, live = self._read_definitions(dom, action, what)
        in_config = self._has_disk(config, path, target, doing)
        if live is None:
            if not in_config:
                devices = config.find("devices")
                if devices is None:
                    devices = ET.SubElement(config, "devices")
                devices.append(_disk_element(path, target))
                self._redefine(config, what)
            return "config"
        flags = 0 if self._has_disk(live, path, target, doing) else _LIVE
        flags |= 0 if in_config else _CONFIG
        if flags:
            with self._doing(action, what):
                dom.attachDeviceFlags(
                    ET.tostring(_disk_element(path, target), encoding="unicode"), flags
                )
        return "live"

    def detach_disk(self, domain: str, path: str, unplug_timeout: float = 10) -> str:
        """Detach the disk whose source is path; return 'live', 'config' or 'absent'.

        A running guest must release the disk (hot-unplug) within unplug_timeout seconds;
        one that does not keeps it, in its live and persistent definitions, and this fails.
        """
        check_domain_name(domain)
        check_abs_path("disk path", path)
        action = f"detach disk {path} from"
        what = f"domain '{domain}'"
        dom = self._lookup_domain(domain, action)
        config, live = self._read_definitions(dom, action, what)
        in_config = _disk_with_source(config, path)
        in_live = _disk_with_source(live, path) if live is not None else None
        if in_live is None:
            if in_config is None:
                return "absent"
            if live is None:
                config.find("devices").remove(in_config)
                self._redefine(config, what)
            else:
                with self._doing(action, what):
                    dom.detachDeviceFlags(self._disk_xml(in_config), _CONFIG)
            return "config"
        disk_xml = self._disk_xml(in_live)
        with self._doing(action, what):
            dom.detachDeviceFlags(disk_xml, _LIVE | (0 if in_config is None else _CONFIG))
        # Detaching is a request to the guest; wait until it lets go of the device.
        deadline = time.monotonic() + unplug_timeout
        while True:
            with self._doing(action, what):
                live = ET.fromstring(dom.XMLDesc(0))  # noqa: S314
            if _disk_with_source(live, path) is None:
                return "live"
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        if in_config is not None:
            self._restore_config_disk(dom, domain, path, disk_xml)
        raise VirtError(
            f"cannot {action} {what} on {self.uri}: the guest did not release it within "
            f"{unplug_timeout:g} s (no hot-unplug support?); shut the VM down and retry"
        )

    @staticmethod
    def _disk_xml(disk: ET.Element) -> str:
        """Return a minimal copy of a disk element; libvirt matches it by target."""
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        bus = target.get("bus", "virtio") if target is not None else "virtio"
        source = disk.find("source")
        copy = _disk_element(source.get("file", "") if source is not None else "", dev, bus)
        driver = disk.find("driver")
        if driver is not None:
            copy.find("driver").attrib.update(driver.attrib)
        return ET.tostring(copy, encoding="unicode")

    def _restore_config_disk(
        self, dom: libvirt.virDomain, domain: str, path: str, disk_xml: str
    ) -> None:
        """Put a disk the guest kept back into the persistent definition."""
        try:
            config = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
            if _disk_with_source(config, path) is None:
                dom.attachDeviceFlags(disk_xml, _CONFIG)
        except libvirt.libvirtError:
            log.exception("could not restore the disk %s of %s in its config", path, domain)

    def disk_targets(self, domain: str) -> dict[str, str]:
        """Return target dev -> source path of the domain's file disks, as it runs now."""
        check_domain_name(domain)
        dom = self._lookup_domain(domain, "read disks of")
        with self._doing("read disks of", f"domain '{domain}'"):
            root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314
        return {
            dev: source
            for disk, dev, source in _disks(root)
            if dev and source and disk.get("device", "disk") == "disk"
        }

    # --- resizing -----------------------------------------------------------------------------

    def set_resources(self, domain: str, vcpus: int, memory_mib: int) -> str:
        """Give the domain vcpus and memory_mib; return 'live', 'next-start' or 'config'."""
        check_domain_name(domain)
        check_count("vCPU count", vcpus, 1, MAX_VCPUS)
        check_count("memory in MiB", memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB)
        kib = memory_mib * 1024
        what = f"domain '{domain}'"
        dom = self._lookup_domain(domain, "resize")
        self._resize_config(dom, domain, vcpus, kib)
        with self._doing("resize", what):
            if not dom.isActive():
                return "config"
        self._resize_live(dom, domain, vcpus, kib)
        with self._doing("read", what):
            live_vcpus = dom.vcpusFlags(_LIVE)
            live_kib = dom.info()[2]
        return "live" if (live_vcpus, live_kib) == (vcpus, kib) else "next-start"

    def _resize_config(self, dom: libvirt.virDomain, domain: str, vcpus: int, kib: int) -> None:
        """Write the sizes into the persistent definition, the maximums first."""
        try:
            dom.setVcpusFlags(vcpus, _CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            dom.setVcpusFlags(vcpus, _CONFIG)
            # Lowering the maximum lowers the current size with it, so this order always works.
            dom.setMemoryFlags(kib, _CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            dom.setMemoryFlags(kib, _CONFIG)
            return
        except libvirt.libvirtError as exc:
            if error_code(exc) not in UNSUPPORTED_CODES:
                raise translate(exc, f"cannot resize domain '{domain}' on {self.uri}") from exc
            log.info("resizing %s on %s by redefining it: %s", domain, self.uri,
                     exc.get_error_message())
        what = f"domain '{domain}'"
        with self._doing("read", what):
            root = ET.fromstring(dom.XMLDesc(_XML_INACTIVE_SECURE))  # noqa: S314
        vcpu = root.find("vcpu")
        if vcpu is None:
            vcpu = ET.SubElement(root, "vcpu")
        vcpu.attrib.pop("current", None)
        vcpu.text = str(vcpus)
        _set_size(root, "memory", kib)
        _set_size(root, "currentMemory", kib)
        self._redefine(root, what)

    def _resize_live(self, dom: libvirt.virDomain, domain: str, vcpus: int, kib: int) -> None:
        """Apply what the running domain's maximums allow; the rest waits for its next start."""
        try:
            if dom.vcpusFlags(_LIVE) != vcpus and vcpus <= dom.vcpusFlags(
                _LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM
            ):
                dom.setVcpusFlags(vcpus, _LIVE)
        except libvirt.libvirtError as exc:
            log.info("%s on %s keeps its vCPUs until its next start: %s", domain, self.uri,
                     exc.get_error_message())
        try:
            _state, max_kib, current_kib, *_rest = dom.info()
            if current_kib != kib and kib <= max_kib:
                dom.setMemoryFlags(kib, _LIVE)
        except libvirt.libvirtError as exc:
            log.info("%s on %s keeps its memory until its next start: %s", domain, self.uri,
                     exc.get_error_message())

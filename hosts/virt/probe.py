"""Find the acceleration and CPU mode under which a host really runs the portal's guests.

A domain that merely starts paused proves little: on some nested AMD hosts qemu aborts in
kvm_buf_set_msrs as soon as a vCPU with host-passthrough or host-model is set up, while the
same guest with a named CPU model runs. So each attempt starts a throw-away domain of the exact
shape of a VM (the caller builds it: machine, CPU element, devices), lets it run for a moment
and checks it is still running. The chain is host-passthrough -> host-model -> named models
(usable ones of the host's vendor, then qemu's generic x86-64 model) -> TCG.
"""

from __future__ import annotations

import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import libvirt

from .facts import ProbeAttempt, ProbeReport

log = logging.getLogger(__name__)

# (domain type, CPU mode) -> the XML of a throw-away domain shaped like a VM.
ShapeBuilder = Callable[[str, str], str]

PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"
CUSTOM_PREFIX = "custom:"
# qemu's own default model: 64-bit, few features, so KVM can nearly always run it.
GENERIC_MODEL = "qemu64"
# Trying every usable model would make a refresh slow; the first few say enough.
MAX_VENDOR_MODELS = 2
# How long a probe guest must keep running; qemu's CPU set-up aborts come well within this.
# A guest booting a real image needs longer: KVM may fail only once its bootloader runs.
SETTLE_S = 1.0
REASON_MAX = 200
ACCELS = ("kvm", "qemu")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\s*")
_RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)


def trim_reason(text: str) -> str:
    """Return the first non-empty line of an error, without qemu's timestamp, at most 200 chars."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    first = _TIMESTAMP_RE.sub("", first).strip() or "no reason given"
    return first if len(first) <= REASON_MAX else first[: REASON_MAX - 1] + "…"


def _xml(text: str) -> ET.Element:
    # libvirt's own capabilities XML; ElementTree fetches no external entities.
    return ET.fromstring(text)  # noqa: S314


def host_vendor(capabilities_xml: str, domcaps_xml: str = "") -> str:
    """Return the host CPU's vendor (AMD, Intel, ...) from libvirt's capabilities, or ''."""
    vendor = (_xml(capabilities_xml).findtext("host/cpu/vendor") or "").strip()
    if not vendor and domcaps_xml:
        vendor = (_xml(domcaps_xml).findtext("cpu/mode[@name='host-model']/vendor") or "").strip()
    return vendor


def kvm_cpu_modes(domcaps_xml: str, vendor: str) -> list[tuple[str, str]]:
    """Return (CPU mode, why it is skipped or '') to try under KVM, best first."""
    cpu = _xml(domcaps_xml).find("cpu")
    offered = {m.get("name"): m for m in cpu.iterfind("mode")} if cpu is not None else {}

    def skip(name: str) -> str:
        mode = offered.get(name)
        # Older libvirt does not describe CPU modes at all; then qemu has the last word.
        if mode is not None and mode.get("supported") == "no":
            return "not offered by libvirt on this host"
        return ""

    modes = [(PASSTHROUGH, skip(PASSTHROUGH)), (HOST_MODEL, skip(HOST_MODEL))]
    custom = offered.get("custom")
    named = [
        (m.text or "").strip()
        for m in (custom.iterfind("model") if custom is not None else ())
        if m.get("usable") == "yes" and vendor and m.get("vendor") == vendor
    ]
    named = [n for n in named if n and n != GENERIC_MODEL][:MAX_VENDOR_MODELS]
    custom_skip = skip("custom")
    modes += [(CUSTOM_PREFIX + n, custom_skip) for n in [*named, GENERIC_MODEL]]
    return modes


def _still_running(dom: libvirt.virDomain) -> tuple[bool, str]:
    try:
        state = dom.state()[0]
    except libvirt.libvirtError:
        # A transient domain whose qemu died is gone altogether.
        return False, "gone"
    return state in _RUNNING, {
        libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_PAUSED: "paused",
    }.get(state, f"in state {state}")


def _destroy_quietly(dom: libvirt.virDomain, uri: str) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        # AUTODESTROY removes it when the connection closes; a dead guest needs nothing.
        log.debug("probe domain on %s already gone: %s", uri, exc.get_error_message())


def attempt(conn: libvirt.virConnect, uri: str, shape: ShapeBuilder, accel: str,
            cpu_mode: str, settle_s: float | None = None) -> ProbeAttempt:
    """Run a guest of the given shape briefly and report whether it kept running."""
    settle = SETTLE_S if settle_s is None else settle_s
    try:
        xml = shape(accel, cpu_mode)
    except ValueError as exc:
        return ProbeAttempt(accel, cpu_mode, False, trim_reason(str(exc)))
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError as exc:
        reason = trim_reason(exc.get_error_message() or str(exc))
        log.info("probe %s/%s on %s failed: %s", accel, cpu_mode or "-", uri, reason)
        return ProbeAttempt(accel, cpu_mode, False, reason)
    try:
        time.sleep(settle)
        running, state = _still_running(dom)
    finally:
        _destroy_quietly(dom, uri)
    if running:
        return ProbeAttempt(accel, cpu_mode, True, "ran")
    why = " (qemu stops a guest whose code it cannot run)" if state == "paused" else ""
    return ProbeAttempt(accel, cpu_mode, False, f"started, then {state} within {settle:g} s{why}")


def _pinned(found: tuple[str, str] | None, accel_pin: str, cpu_mode_pin: str) -> tuple[str, str]:
    """Return the (acceleration, CPU mode) an administrator's pins make of the probe's result."""
    if accel_pin:
        accel = accel_pin
    elif cpu_mode_pin in (PASSTHROUGH, HOST_MODEL):
        accel = "kvm"
    else:
        accel = found[0] if found else "qemu"
    if cpu_mode_pin:
        return accel, cpu_mode_pin
    # No <cpu> at all is what most often starts when the probe found nothing for this accel.
    return accel, found[1] if found and found[0] == accel else ""


def run_probe(conn: libvirt.virConnect, uri: str, shape: ShapeBuilder, *,
              accel_pin: str = "", cpu_mode_pin: str = "",
              settle_s: float | None = None) -> ProbeReport:
    """Try the fallback chain on conn and return what runs, honouring an admin's pins."""
    if accel_pin and accel_pin not in ACCELS:
        raise ValueError(f"invalid acceleration pin {accel_pin!r}: use one of {ACCELS}")
    attempts: list[ProbeAttempt] = []
    found: tuple[str, str] | None = None
    try:
        domcaps = conn.getDomainCapabilities(None, None, None, "kvm", 0)
        vendor = host_vendor(conn.getCapabilities(), domcaps)
    except libvirt.libvirtError as exc:
        attempts.append(ProbeAttempt("kvm", "", False,
                                     "KVM is not offered: " + trim_reason(exc.get_error_message())))
    else:
        for mode, skipped in kvm_cpu_modes(domcaps, vendor):
            if skipped:
                attempts.append(ProbeAttempt("kvm", mode, False, skipped))
                continue
            attempts.append(attempt(conn, uri, shape, "kvm", mode, settle_s))
            if attempts[-1].ok:
                found = ("kvm", mode)
                break
    if found is None:
        attempts.append(attempt(conn, uri, shape, "qemu", "", settle_s))
        if attempts[-1].ok:
            found = ("qemu", "")
    if not (accel_pin or cpu_mode_pin):
        accel, cpu_mode = found or ("", "")
        return ProbeReport(accel, cpu_mode, tuple(attempts))
    accel, cpu_mode = _pinned(found, accel_pin, cpu_mode_pin)
    if not any(a.accel == accel and a.cpu_mode == cpu_mode for a in attempts):
        # Used as given all the same; the report shows whether it would run.
        attempts.append(attempt(conn, uri, shape, accel, cpu_mode, settle_s))
    return ProbeReport(accel, cpu_mode, tuple(attempts), pinned=True)

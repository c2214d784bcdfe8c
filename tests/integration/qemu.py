"""Helpers of the hypervisor tier: virsh, unique names and a bootable base image."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

URI = "qemu:///system"
MIB = 1024**2


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120, check=check
    )


def virsh_info(command: str, name: str) -> dict[str, str]:
    """Return the 'Key: value' lines of virsh pool-info / net-info as a dict."""
    lines = virsh(command, name).stdout.splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}


def domstate(name: str) -> str:
    return virsh("domstate", name).stdout.strip()


def unique(prefix: str = "portaltest") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_base_image(workdir: Path, name: str = "base.qcow2") -> Path:
    """Write a 1 MiB disk whose boot sector spins forever, converted to qcow2."""
    raw = workdir.parent / f"{workdir.name}.raw"
    sector = bytes([0xEB, 0xFE]) + bytes(508) + b"\x55\xaa"  # jmp $ ; boot signature
    raw.write_bytes(sector + bytes(MIB - len(sector)))
    base = workdir / name
    try:
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(base)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    finally:
        raw.unlink()
    base.chmod(0o644)
    return base


def qemu_img_info(path: str) -> dict:
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", path],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout)

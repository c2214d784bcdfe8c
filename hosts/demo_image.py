"""Build a tiny bootable disk image for demos and hypervisor tests.

The image holds one hand-assembled x86 real-mode boot sector that prints a message through
the BIOS teletype service (int 0x10, AH=0x0E), copies it to the first serial port (0x3F8) so
tests can read it from a serial log, and then halts forever. No operating system, no network:
it boots in well under a second under KVM or TCG and uses almost no memory.

Pure Python apart from ``qemu-img``; no Django imports.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from pathlib import Path

SECTOR_SIZE = 512
LOAD_ADDRESS = 0x7C00
MAX_MESSAGE_BYTES = 400
MAX_IMAGE_MIB = 1024 * 1024  # 1 TiB is far beyond any demo template

# Offsets are relative to the start of the sector (loaded at 0000:7C00).
#   00 FA           cli
#   01 31 C0        xor  ax, ax
#   03 8E D8        mov  ds, ax
#   05 8E C0        mov  es, ax
#   07 8E D0        mov  ss, ax
#   09 BC 00 7C     mov  sp, 0x7C00
#   0C FB           sti
#   0D FC           cld
#   0E BE lo hi     mov  si, message          (absolute address, DS = 0)
#   11 BB 07 00     mov  bx, 0x0007           (page 0, light grey)
# loop:
#   14 AC           lodsb
#   15 84 C0        test al, al
#   17 74 0A        jz   done                 (0x19 + 0x0A = 0x23)
#   19 BA F8 03     mov  dx, 0x03F8           (COM1 data register)
#   1C EE           out  dx, al
#   1D B4 0E        mov  ah, 0x0E
#   1F CD 10        int  0x10
#   21 EB F1        jmp  loop                 (0x23 - 0x0F = 0x14)
# done:
#   23 FA           cli
#   24 F4           hlt
#   25 EB FC        jmp  $-2 -> cli           (0x27 - 4 = 0x23); an NMI only loops back
# message:
#   27 ...          message bytes, then NUL
_CODE_HEAD = bytes.fromhex("FA 31C0 8ED8 8EC0 8ED0 BC007C FB FC BE")
_CODE_TAIL = bytes.fromhex("BB0700 AC 84C0 740A BAF803 EE B40E CD10 EBF1 FA F4 EBFC")
_MESSAGE_OFFSET = len(_CODE_HEAD) + 2 + len(_CODE_TAIL)


def _encode_message(message: str) -> bytes:
    """Return the message as teletype bytes (CR LF line ends) or raise ValueError."""
    if not isinstance(message, str):
        raise TypeError("message must be a str")
    if not message:
        raise ValueError("message must not be empty")
    for ch in message:
        if ch not in "\n\r\t" and not (" " <= ch <= "~"):
            raise ValueError(
                f"message may only hold printable ASCII, tabs and newlines, not {ch!r}"
            )
    text = message.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    data = text.encode("ascii")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"message is {len(data)} bytes once encoded; at most {MAX_MESSAGE_BYTES} fit"
        )
    return data


def build_boot_sector(message: str) -> bytes:
    """Return a 512-byte boot sector that prints ``message`` and halts forever."""
    data = _encode_message(message)
    code = (
        _CODE_HEAD + struct.pack("<H", LOAD_ADDRESS + _MESSAGE_OFFSET) + _CODE_TAIL + data + b"\x00"
    )
    if len(code) > SECTOR_SIZE - 2:  # pragma: no cover - guarded by MAX_MESSAGE_BYTES
        raise ValueError("message does not fit in the boot sector")
    return code.ljust(SECTOR_SIZE - 2, b"\x00") + b"\x55\xaa"


def build_template_image(path: Path, message: str, size_mib: int = 64) -> None:
    """Write a qcow2 image at ``path`` whose first sector is ``build_boot_sector(message)``."""
    path = Path(path)
    if isinstance(size_mib, bool) or not isinstance(size_mib, int):
        raise TypeError("size_mib must be an int")
    if not 1 <= size_mib <= MAX_IMAGE_MIB:
        raise ValueError(f"size_mib must lie between 1 and {MAX_IMAGE_MIB}")
    sector = build_boot_sector(message)
    directory = path.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {directory} does not exist")

    raw_fd, raw_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".raw")
    out_fd, out_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(out_fd)
    try:
        with os.fdopen(raw_fd, "wb") as raw:
            raw.write(sector)
            raw.truncate(size_mib * 1024 * 1024)  # sparse: only the first sector holds data
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw_name, out_name],
            check=True,
            timeout=60,
            capture_output=True,
        )
        # mkstemp creates 0600; the hypervisor's qemu user must be able to read templates.
        os.chmod(out_name, 0o644)
        os.replace(out_name, path)
    except BaseException:
        _unlink_quietly(out_name)
        raise
    finally:
        _unlink_quietly(raw_name)


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass

import ast
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hosts.demo_image import MAX_MESSAGE_BYTES, build_boot_sector, build_template_image


def test_boot_sector_is_one_sector_with_boot_signature():
    sector = build_boot_sector("Hello")

    assert len(sector) == 512
    assert sector[510:] == b"\x55\xaa"


def test_boot_sector_carries_the_message_nul_terminated():
    sector = build_boot_sector("portal demo VM")

    assert b"portal demo VM\x00" in sector


def test_boot_sector_turns_newlines_into_cr_lf():
    sector = build_boot_sector("one\ntwo")

    assert b"one\r\ntwo\x00" in sector


def test_boot_sector_points_si_at_the_message():
    sector = build_boot_sector("xyz")
    mov_si = sector.index(b"\xbe")  # mov si, imm16
    address = int.from_bytes(sector[mov_si + 1 : mov_si + 3], "little")

    assert sector[address - 0x7C00 :].startswith(b"xyz\x00")


def test_boot_sector_ends_in_a_halt_loop():
    sector = build_boot_sector("x")

    assert b"\xfa\xf4\xeb\xfc" in sector  # cli; hlt; jmp back to cli


def test_longest_message_fits():
    sector = build_boot_sector("a" * MAX_MESSAGE_BYTES)

    assert len(sector) == 512
    assert sector[510:] == b"\x55\xaa"


@pytest.mark.parametrize(
    "message",
    [
        "",
        "caf\u00e9",
        "bell\x07",
        "nul\x00",
        "a" * (MAX_MESSAGE_BYTES + 1),
        "\n" * (MAX_MESSAGE_BYTES // 2 + 1),  # each newline grows to CR LF
    ],
)
def test_bad_message_is_refused(message):
    with pytest.raises(ValueError):
        build_boot_sector(message)


def test_non_string_message_is_refused():
    with pytest.raises(TypeError):
        build_boot_sector(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("size_mib", [0, -1])
def test_bad_image_size_is_refused_before_anything_is_written(tmp_path, size_mib):
    with pytest.raises(ValueError):
        build_template_image(tmp_path / "t.qcow2", "hi", size_mib=size_mib)

    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_no_file_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(subprocess.CalledProcessError):
        build_template_image(tmp_path / "t.qcow2", "hi")

    assert list(tmp_path.iterdir()) == []


def _qemu_img(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


@pytest.mark.hypervisor
def test_template_image_is_qcow2_of_the_asked_size_starting_with_the_boot_sector(tmp_path):
    image = tmp_path / "demo.qcow2"
    build_template_image(image, "Hello from the portal", size_mib=16)

    info = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(image)).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 16 * 1024 * 1024
    assert "backing-filename" not in info
    raw = tmp_path / "back.raw"
    _qemu_img("convert", "-f", "qcow2", "-O", "raw", str(image), str(raw))
    with raw.open("rb") as fh:
        assert fh.read(512) == build_boot_sector("Hello from the portal")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.raw", "demo.qcow2"]


@pytest.mark.hypervisor
def test_template_image_replaces_an_existing_file_whole(tmp_path):
    image = tmp_path / "demo.qcow2"
    image.write_bytes(b"old")
    build_template_image(image, "new", size_mib=1)

    info = json.loads(_qemu_img("info", "--output=json", "-f", "qcow2", str(image)).stdout)
    assert info["virtual-size"] == 1024 * 1024
    assert [p.name for p in tmp_path.iterdir()] == ["demo.qcow2"]


@pytest.mark.hypervisor
def test_template_image_boots_and_prints_its_message_on_the_serial_port(tmp_path):
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.fail("qemu-system-x86_64 is not installed (package qemu-system-x86)")
    image = tmp_path / "demo.qcow2"
    serial = tmp_path / "serial.log"
    build_template_image(image, "booted OK", size_mib=1)

    argv = [
        qemu, "-machine", "accel=kvm:tcg", "-m", "32", "-nodefaults", "-vga", "std",
        "-display", "none", "-drive", f"file={image},format=qcow2,if=ide",
        "-serial", f"file:{serial}", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    qemu_log = tmp_path / "qemu.log"
    with qemu_log.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if serial.exists() and b"booted OK" in serial.read_bytes():
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = serial.read_bytes() if serial.exists() else b""

    assert b"booted OK" in output, qemu_log.read_text(errors="replace")


def test_module_does_not_import_django():
    source = Path(__file__).resolve().parents[2] / "hosts" / "demo_image.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])

    assert "django" not in imported

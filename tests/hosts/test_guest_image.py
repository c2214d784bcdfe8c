"""Fast tests of the demo guest builder's pieces; tests/integration checks a built image."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hosts import guest_image as gi
from tests.integration.guest import read_cpio
from vms.cloudinit import SeedUser, hash_password, seed_documents

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIBdXUSkXHGC8B/XTNfziTj9cl1m9/fIy9XmIWrm1GBC sam@laptop"


# -- pieces -----------------------------------------------------------------------------------


def test_cpio_archive_keeps_files_modes_links_and_adds_the_console(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "shadow").write_text("root:*:1::::::\n")
    (tmp_path / "etc" / "shadow").chmod(0o600)
    (tmp_path / "init").write_text("#!/bin/sh\n")
    (tmp_path / "init").chmod(0o755)
    (tmp_path / "sh").symlink_to("init")
    entries = read_cpio(gi.cpio_archive(tmp_path))
    assert entries["etc"][0] & 0o170000 == 0o040000
    assert entries["etc/shadow"][:2] == (0o100600, b"root:*:1::::::\n")
    assert entries["init"][:2] == (0o100755, b"#!/bin/sh\n")
    assert entries["sh"][:2] == (0o120777, b"init")
    assert entries["dev/console"][0] == 0o020600 and entries["dev/console"][2] == (5, 1)
    assert entries["dev/null"][2] == (1, 3)


def test_cpio_archive_pads_to_whole_blocks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 3)
    assert len(gi.cpio_archive(tmp_path)) % 512 == 0


def test_mbr_has_one_active_partition_and_the_boot_signature() -> None:
    sector = gi.mbr(b"\xfa" * 440, 2048, 129024)
    assert len(sector) == 512
    assert sector[:440] == b"\xfa" * 440
    entry = sector[446:462]
    assert entry[0] == 0x80 and entry[4] == 0x0E
    assert struct.unpack("<II", entry[8:16]) == (2048, 129024)
    assert sector[462:510] == bytes(48)
    assert sector[510:] == b"\x55\xaa"


def test_mbr_refuses_boot_code_that_overlaps_the_partition_table() -> None:
    with pytest.raises(gi.GuestImageError, match="440"):
        gi.mbr(b"\0" * 441, 2048, 1)


def test_module_depends_reads_the_modinfo_section() -> None:
    ko = b"\x7fELF junk\0license=GPL\0depends=virtio,net_failover\0intree=Y\0name=virtio_net\0"
    assert gi.module_depends(ko) == ["virtio", "net_failover"]
    assert gi.module_depends(b"\0depends=\0name=virtio\0") == []
    assert gi.module_depends(b"no modinfo here") == []


def test_module_names_skip_comments_and_refuse_odd_names() -> None:
    assert gi.module_names("# drivers\nvirtio_pci\n\nsr-mod  # cd\n") == ["virtio_pci", "sr_mod"]
    with pytest.raises(gi.GuestImageError, match="bad module name"):
        gi.module_names("../../evil\n")


def test_the_module_list_covers_seed_network_disks_and_power_button() -> None:
    names = set(gi.module_names((gi.GUEST_DIR / "modules").read_text()))
    assert {"virtio_pci", "virtio_net", "virtio_blk", "ahci", "sr_mod", "isofs", "button",
            "evdev"} <= names


def test_every_guest_file_exists_and_scripts_are_shell() -> None:
    for source, (target, mode) in gi.GUEST_FILES.items():
        path = gi.GUEST_DIR / source
        assert path.is_file(), source
        assert not target.startswith("/")
        if mode & 0o111:
            assert path.read_text().startswith("#!/bin/sh\n"), source
    shipped = {p.name for p in gi.GUEST_DIR.iterdir()}
    assert shipped == set(gi.GUEST_FILES) | set(gi.BOOT_FILES)


def test_content_key_changes_with_every_input() -> None:
    kernel = gi.KernelPackage("linux-image-6.1.0-1-amd64", "6.1.1-1")
    versions = {"busybox-static": "1:1.35", "dropbear-bin": "2022.83"}
    base = gi.content_key(kernel, versions, "f" * 64)
    assert base == gi.content_key(kernel, dict(reversed(versions.items())), "f" * 64)
    assert base != gi.content_key(gi.KernelPackage(kernel.name, "6.1.1-2"), versions, "f" * 64)
    assert base != gi.content_key(kernel, {**versions, "dropbear-bin": "2022.84"}, "f" * 64)
    assert base != gi.content_key(kernel, versions, "e" * 64)


def test_guest_files_digest_follows_the_files(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    shutil.copytree(gi.GUEST_DIR, tmp_path / "guest")
    monkeypatch.setattr(gi, "GUEST_DIR", tmp_path / "guest")
    before = gi.guest_files_digest()
    assert before == gi.guest_files_digest()
    (tmp_path / "guest" / "issue").write_text("changed\n")
    assert gi.guest_files_digest() != before


def test_ensure_guest_image_returns_the_cached_image_without_building(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kernel = gi.KernelPackage("linux-image-6.1.0-1-amd64", "6.1.1-1")
    monkeypatch.setattr(gi, "kernel_package", lambda: kernel)
    monkeypatch.setattr(gi, "installed_version", lambda name: "1.0")
    key = gi.content_key(kernel, dict.fromkeys(gi.USER_PACKAGES, "1.0"), gi.guest_files_digest())
    cached = tmp_path / f"{gi.IMAGE_PREFIX}{key}.qcow2"
    cached.write_bytes(b"qcow2")

    def no_build(*args: object) -> None:
        raise AssertionError("a cached image must not be rebuilt")

    monkeypatch.setattr(gi, "_build", no_build)
    assert gi.ensure_guest_image(tmp_path) == cached


def test_a_failed_build_leaves_no_image_and_no_work_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kernel = gi.KernelPackage("linux-image-6.1.0-1-amd64", "6.1.1-1")
    monkeypatch.setattr(gi, "kernel_package", lambda: kernel)
    monkeypatch.setattr(gi, "installed_version", lambda name: "1.0")
    monkeypatch.setattr(gi, "_kernel_deb", lambda debs, k: tmp_path / "kernel.deb")

    def broken(work: Path, deb: Path, image: Path) -> None:
        (work / "half-made").write_text("x")
        raise gi.GuestImageError("qemu-img convert failed: no space")

    monkeypatch.setattr(gi, "_build", broken)
    with pytest.raises(gi.GuestImageError, match="no space"):
        gi.ensure_guest_image(tmp_path)
    assert not list(tmp_path.glob("*.qcow2"))
    assert not list(tmp_path.glob(".guest-build-*"))


def test_a_missing_tool_is_named_with_where_to_get_it() -> None:
    with pytest.raises(gi.GuestImageError, match="no-such-tool is not installed"):
        gi._run(["no-such-tool", "--version"])


# -- the guest's seed reader ---------------------------------------------------------------


def parse(text: str, tmp_path: Path) -> list[list[str]]:
    """Run the guest's seed reader (busybox awk, as in the guest) over text."""
    source = tmp_path / "seed.yaml"
    source.write_text(text)
    out = subprocess.run(
        [str(gi.BUSYBOX), "awk", "-f", str(gi.GUEST_DIR / "nocloud.awk"), str(source)],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_guest_reads_the_seed_the_portal_writes(tmp_path: Path) -> None:
    hashed = hash_password("pw")
    odd_key = KEY.rsplit(" ", 1)[0] + " it's #1: \"x\" {y} " + "long " * 30
    docs = seed_documents(
        instance_id="iid-1", hostname="web-1", mac="52:54:00:12:34:56",
        user=SeedUser(name="sam", password_hash=hashed, ssh_keys=(KEY, odd_key),
                      gecos="Sam O'Brien, #2"),
    )
    assert parse(docs["meta-data"], tmp_path) == [
        ["top", "instance-id", "iid-1"], ["top", "local-hostname", "web-1"]]
    records = parse(docs["user-data"], tmp_path)
    assert ["top", "hostname", "web-1"] in records
    assert ["top", "ssh_pwauth", "true"] in records
    user = records[records.index(["user", "begin"]):records.index(["user", "end"]) + 1]
    assert ["field", "name", "sam"] in user
    assert ["field", "gecos", "Sam O'Brien, #2"] in user
    assert ["field", "hashed_passwd", hashed] in user
    assert ["field", "lock_passwd", "false"] in user
    assert [r[1] for r in user if r[0] == "sshkey"] == [KEY, odd_key.strip()]


def test_guest_reads_cloud_config_written_by_other_tools(tmp_path: Path) -> None:
    text = """#cloud-config
hostname: web-2   # a comment
runcmd:
  - [ls, -l]
users:
  - default
  - name: alice
    groups: [sudo, adm]
    lock_passwd: false
    passwd: "$6$salt$hash"
    ssh_authorized_keys:
      - ssh-ed25519 AAAA alice@x
      - 'ssh-rsa BBBB bob''s key'
      - "ssh-ed25519 CCCC folded
        comment"
  - name: carol
    ssh_authorized_keys: [ssh-ed25519 DDDD d, ssh-ed25519 EEEE e]
ssh_pwauth: yes
"""
    assert parse(text, tmp_path) == [
        ["top", "hostname", "web-2"],
        ["user", "begin"],
        ["field", "name", "alice"],
        ["field", "groups", "[sudo, adm]"],
        ["field", "lock_passwd", "false"],
        ["field", "passwd", "$6$salt$hash"],
        ["sshkey", "ssh-ed25519 AAAA alice@x"],
        ["sshkey", "ssh-rsa BBBB bob's key"],
        ["sshkey", "ssh-ed25519 CCCC folded comment"],
        ["user", "end"],
        ["user", "begin"],
        ["field", "name", "carol"],
        ["sshkey", "ssh-ed25519 DDDD d"],
        ["sshkey", "ssh-ed25519 EEEE e"],
        ["user", "end"],
        ["top", "ssh_pwauth", "yes"],
    ]
